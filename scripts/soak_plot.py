"""Plots a soak run's time series (soak.json from scripts/soak.py) as one PNG: rows
committed and requests per second, errors seen and faults injected, p99 latency, and
the daemon's RSS, open fds and async tasks."""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src, dst):
    d = json.load(open(src))
    s, summ = d["samples"], d["summary"]
    t = [x["t"] for x in s]
    fig, ax = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
    ax[0].plot(t, [x["rows_per_s"] for x in s], label="rows committed / s (connector)")
    ax0b = ax[0].twinx()
    ax0b.plot(t, [x["requests_per_s"] for x in s], color="tab:orange", label="daemon requests / s")
    ax[0].set_ylabel("rows / s")
    ax0b.set_ylabel("requests / s")
    ax[0].legend(loc="upper left")
    ax0b.legend(loc="upper right")
    kills = [a for a in summ["connector_attempts"] if a["killed"]]
    ax[0].set_title(f"soak {summ['seconds']} s: {summ['events']} events, {len(kills)} SIGKILLs, "
                    f"{summ['requests']} requests, {'passed' if summ['passed'] else 'FAILED'}")

    def injected(x):
        f = x.get("faults") or {}
        return sum(f.get(k, 0) for k in ("injected_500", "injected_503", "reset_before_forward", "reset_mid_body"))

    inj = [injected(x) for x in s]
    ax[1].bar(t, [b - a for a, b in zip([0] + inj[:-1], inj)], width=3, alpha=0.5,
              label="faults injected (500/503/reset) per sample")
    ax[1].plot(t, [x["errors"] for x in s], color="tab:red", marker=".", label="request errors seen per sample")
    ax[1].set_ylabel("count")
    ax[1].legend(loc="upper left")
    ax[2].plot(t, [x["p99_ms"] for x in s], label="p99, all requests")
    ax[2].plot(t, [x["p99_query_ms"] for x in s], label="p99, queries")
    ax[2].set_ylabel("latency (ms)")
    ax[2].set_yscale("log")
    ax[2].legend(loc="upper left")
    ax[3].plot(t, [x["daemon_rss_mb"] for x in s], label="daemon RSS (MB)")
    ax[3].plot(t, [x["connector_rss_mb"] for x in s], label="connector RSS (MB)", alpha=0.6)
    ax[3].set_ylabel("MB")
    ax3b = ax[3].twinx()
    ax3b.plot(t, [x["daemon_fds"] for x in s], color="tab:green", label="daemon open fds")
    ax3b.plot(t, [x.get("daemon_tasks") for x in s], color="tab:purple", alpha=0.7,
              label="daemon async tasks")
    ax3b.set_ylabel("fds, tasks")
    ax[3].legend(loc="upper left")
    ax3b.legend(loc="upper right")
    ax[3].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(dst, dpi=90)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
