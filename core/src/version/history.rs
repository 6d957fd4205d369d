//! The commit log: the first-parent chain from a node to the root, newest first, as
//! 3.x's `ds.log()` walks it, and commit dates rendered as 3.x renders them.

use crate::format::vcinfo::VersionControlInfo;

/// One node of the log.
#[derive(Clone, Debug, PartialEq)]
pub struct CommitRecord {
    pub id: String,
    pub branch: String,
    pub message: Option<String>,
    /// Unix seconds; `None` for a head (uncommitted) node.
    pub time: Option<f64>,
    pub author: Option<String>,
    pub parent: Option<String>,
    /// For a merge commit we made: the commit it merged in.
    pub merge_parent: Option<String>,
    pub is_head: bool,
}

impl CommitRecord {
    /// The commit time as 3.x prints it (`YYYY-MM-DD HH:MM:SS`), see [`format_commit_time`].
    pub fn date(&self) -> Option<String> {
        self.time.and_then(format_commit_time)
    }
}

/// The first-parent chain from `from` to the root, newest first. A head node is listed
/// too (`is_head`); 3.x's printed log skips it. Unknown ids end the chain.
pub fn log(tree: &VersionControlInfo, from: &str) -> Vec<CommitRecord> {
    tree.ancestry(from)
        .into_iter()
        .filter_map(|id| record(tree, id))
        .collect()
}

/// Every node of the tree (commits and heads of all branches), by id.
pub fn all(tree: &VersionControlInfo) -> Vec<CommitRecord> {
    tree.commits
        .keys()
        .filter_map(|id| record(tree, id.clone()))
        .collect()
}

fn record(tree: &VersionControlInfo, id: String) -> Option<CommitRecord> {
    let n = tree.commits.get(&id)?;
    Some(CommitRecord {
        branch: n.branch.clone(),
        message: n.commit_message.clone(),
        time: n.commit_time,
        author: n.commit_user_name.clone(),
        parent: n.parent.clone(),
        merge_parent: n.merge_parent.clone(),
        is_head: n.is_head(),
        id,
    })
}

/// A stored commit time as 3.x shows it: `str(datetime.fromtimestamp(t))[:-7]` in a
/// process whose local time is UTC, i.e. the UTC date and time to the second, with the
/// microseconds rounded half-to-even first, as `fromtimestamp` does. (3.x cuts the
/// text short when the microseconds are exactly zero; we print the full time then.)
/// `None` for times outside the years 1..=9999.
pub fn format_commit_time(t: f64) -> Option<String> {
    if !t.is_finite() || t.abs() > 1e12 {
        return None;
    }
    let whole = t.trunc();
    let micros = ((t - whole) * 1e6).round_ties_even();
    // `whole` is an integer below 1e12 in magnitude: exact as i64.
    let mut secs = whole as i64;
    if micros >= 1e6 {
        secs += 1;
    } else if micros < 0.0 {
        secs -= 1;
    }
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    if !(1..=9999).contains(&y) {
        return None;
    }
    Some(format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    ))
}

/// Proleptic Gregorian date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    // Shift to an era starting 0000-03-01 so that leap days fall at the end of a year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::vcinfo::CommitNode;
    use crate::ids::FIRST_COMMIT_ID;

    #[test]
    fn dates_match_python_in_utc() {
        // Values from `str(datetime.fromtimestamp(t))` with TZ=UTC.
        let cases = [
            (0.0, "1970-01-01 00:00:00"),
            (1_700_000_000.25, "2023-11-14 22:13:20"),
            (1_709_164_800.5, "2024-02-29 00:00:00"),
            (951_782_400.0, "2000-02-29 00:00:00"),
            (4_107_542_399.9, "2100-02-28 23:59:59"),
            (-1.5, "1969-12-31 23:59:58"),
            // Microseconds that round up carry into the seconds.
            (1_700_000_000.999_999_7, "2023-11-14 22:13:21"),
            (253_402_300_799.0, "9999-12-31 23:59:59"),
        ];
        for (t, want) in cases {
            assert_eq!(format_commit_time(t).as_deref(), Some(want), "{t}");
        }
        for bad in [
            f64::NAN,
            f64::INFINITY,
            253_402_300_800.0,
            -62_135_596_801.0,
        ] {
            assert_eq!(format_commit_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn log_walks_first_parents_newest_first() {
        let mut tree = VersionControlInfo::new_root();
        let c1 = "1111111111111111111111111111111111111111";
        let h = "2222222222222222222222222222222222222222";
        if let Some(root) = tree
            .commits
            .get_mut(FIRST_COMMIT_ID)
            .map(std::sync::Arc::make_mut)
        {
            root.commit_time = Some(1_700_000_000.0);
            root.commit_message = Some("first".into());
            root.commit_user_name = Some("public".into());
        }
        let mut n = CommitNode::head("main", Some(FIRST_COMMIT_ID.into()));
        n.commit_time = Some(1_700_000_100.0);
        n.commit_message = Some("second".into());
        tree.commits.insert(c1.into(), n.into());
        tree.commits
            .insert(h.into(), CommitNode::head("main", Some(c1.into())).into());
        tree.branches.insert("main".into(), h.into());
        let l = log(&tree, h);
        let ids: Vec<&str> = l.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, [h, c1, FIRST_COMMIT_ID]);
        assert!(l[0].is_head && l[0].date().is_none() && l[0].message.is_none());
        assert_eq!(l[1].message.as_deref(), Some("second"));
        assert_eq!(l[1].parent.as_deref(), Some(FIRST_COMMIT_ID));
        assert_eq!(l[2].date().as_deref(), Some("2023-11-14 22:13:20"));
        assert_eq!(l[2].author.as_deref(), Some("public"));
        assert_eq!(log(&tree, c1).len(), 2);
        assert!(log(&tree, "unknown").is_empty());
    }
}
