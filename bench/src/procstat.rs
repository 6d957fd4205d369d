//! CPU time and memory of this process from `/proc` (Linux only), shared by the bench
//! binaries.

#![allow(dead_code)]

use anyhow::{Context, Result, bail};

/// CPU seconds (user + system) of the whole process, all threads, dead ones included.
pub fn process_cpu() -> Result<f64> {
    proc_stat_cpu("/proc/self/stat")
}

/// CPU seconds (user + system) of the calling thread.
pub fn thread_cpu() -> Result<f64> {
    proc_stat_cpu("/proc/thread-self/stat")
}

fn proc_stat_cpu(path: &str) -> Result<f64> {
    let s = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) may hold spaces; fields after its closing paren are
    // plain. utime and stime are fields 14 and 15, i.e. the 12th and 13th after it.
    let rest = s
        .rsplit_once(')')
        .map(|x| x.1)
        .context("malformed /proc stat")?;
    let mut f = rest.split_whitespace().skip(11);
    let utime: u64 = f.next().context("no utime")?.parse()?;
    let stime: u64 = f.next().context("no stime")?.parse()?;
    Ok((utime + stime) as f64 / clock_ticks()? as f64)
}

/// `sysconf(_SC_CLK_TCK)` without libc: the kernel passes it in the aux vector.
pub fn clock_ticks() -> Result<u64> {
    const AT_CLKTCK: u64 = 17;
    let auxv = std::fs::read("/proc/self/auxv").context("reading /proc/self/auxv")?;
    for pair in auxv.chunks_exact(16) {
        let (k, v) = pair.split_at(8);
        let k = u64::from_ne_bytes(k.try_into()?);
        let v = u64::from_ne_bytes(v.try_into()?);
        if k == AT_CLKTCK && v > 0 {
            return Ok(v);
        }
    }
    bail!("AT_CLKTCK not found in /proc/self/auxv")
}

/// The peak resident set of this process (`VmHWM`), in bytes.
pub fn peak_rss() -> Result<u64> {
    let s = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let line = s
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM in /proc/self/status")?;
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .context("malformed VmHWM")?
        .parse()?;
    Ok(kb * 1024)
}
