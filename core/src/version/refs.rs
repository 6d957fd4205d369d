//! References to nodes of the commit tree as users write them (a branch name, a commit
//! id or a tag), and the `PATH@ref` suffix of a dataset URL.
//!
//! A bare name is looked up in the order 3.x uses for the operation:
//!
//! | operation | order |
//! |---|---|
//! | open, checkout ([`Ref::resolve`]) | branch name, commit id, tag |
//! | diff ([`Ref::resolve_for_diff`]) | commit id, branch name, tag |
//!
//! The two orders differ only for a branch named like a commit id of the same tree.
//! Tags are ours (3.x has none), so they come last and never shadow a 3.x address.
//!
//! `PATH@ref`: [`split_ref`] is the one place that takes a ref off a URL. Object keys
//! may contain `@`, so only the text after the **last** `@` counts, and only when it is
//! a valid ref name (letters, digits, `_`, `-`, `.`, not starting with `.` or `-`, at
//! most 128 bytes; in particular no `/`). `s3://b/a@b/ds` therefore has no ref, while
//! `s3://b/ds@main` has ref `main`. A path that really ends in `@name` stays reachable:
//! [`crate::Dataset::open_url`] falls back to the whole URL when no dataset exists
//! before the `@`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::format::vcinfo::VersionControlInfo;
use crate::ids::{BranchName, CommitId};
use crate::store::Store;

/// Tag name -> commit id.
pub type Tags = BTreeMap<String, String>;

/// A node of the commit tree, named by the user.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Ref {
    /// A bare name, resolved in the order of the operation (module docs).
    Name(String),
    Branch(String),
    Commit(CommitId),
    Tag(String),
}

/// What a [`Ref`] turned out to name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefKind {
    Branch,
    Commit,
    Tag,
}

/// A resolved [`Ref`]: the node, and the branch it is read as (a branch's own name;
/// for a commit or tag, the branch the node was made on, as 3.x's checkout does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedRef {
    pub node: CommitId,
    pub branch: String,
    pub kind: RefKind,
}

impl Ref {
    /// Whether `s` may stand after `@` in a URL: the branch-name syntax of [`BranchName`],
    /// which commit ids and our tag names also satisfy.
    pub fn is_url_ref(s: &str) -> bool {
        s.parse::<BranchName>().is_ok()
    }

    /// The text the user gave.
    pub fn as_str(&self) -> &str {
        match self {
            Ref::Name(s) | Ref::Branch(s) | Ref::Tag(s) => s,
            Ref::Commit(c) => c.as_str(),
        }
    }

    /// Resolves as `open` and `checkout` do: branch, then commit id, then tag.
    pub fn resolve(&self, tree: &VersionControlInfo, tags: &Tags) -> Result<ResolvedRef> {
        self.resolve_in(
            tree,
            tags,
            &[RefKind::Branch, RefKind::Commit, RefKind::Tag],
        )
    }

    /// Resolves as 3.x's `diff` does: commit id, then branch, then tag.
    pub fn resolve_for_diff(&self, tree: &VersionControlInfo, tags: &Tags) -> Result<ResolvedRef> {
        self.resolve_in(
            tree,
            tags,
            &[RefKind::Commit, RefKind::Branch, RefKind::Tag],
        )
    }

    fn resolve_in(
        &self,
        tree: &VersionControlInfo,
        tags: &Tags,
        order: &[RefKind],
    ) -> Result<ResolvedRef> {
        let (name, kinds): (&str, &[RefKind]) = match self {
            Ref::Name(s) => (s, order),
            Ref::Branch(s) => (s, &[RefKind::Branch]),
            Ref::Commit(c) => (c.as_str(), &[RefKind::Commit]),
            Ref::Tag(s) => (s, &[RefKind::Tag]),
        };
        for kind in kinds {
            let found = match kind {
                RefKind::Branch => tree
                    .branches
                    .get(name)
                    .map(|head| (head.as_str(), Some(name))),
                RefKind::Commit => tree
                    .commits
                    .get_key_value(name)
                    .map(|(id, _)| (id.as_str(), None)),
                RefKind::Tag => tags.get(name).map(|c| (c.as_str(), None)),
            };
            let Some((id, branch)) = found else { continue };
            let node_rec = tree.commits.get(id).ok_or_else(|| {
                Error::corrupt(
                    "commit tree",
                    format!("{name:?} points at unknown commit {id}"),
                )
            })?;
            let node: CommitId = id
                .parse()
                .map_err(|_| Error::corrupt("commit tree", format!("bad commit id {id:?}")))?;
            return Ok(ResolvedRef {
                node,
                branch: branch.unwrap_or(&node_rec.branch).to_owned(),
                kind: *kind,
            });
        }
        let what = match self {
            Ref::Name(_) => "branch, commit or tag",
            Ref::Branch(_) => "branch",
            Ref::Commit(_) => "commit",
            Ref::Tag(_) => "tag",
        };
        Err(Error::not_found(what, name))
    }
}

impl FromStr for Ref {
    type Err = Error;

    /// A bare name. 3.x does not validate branch names, so any non-empty text without
    /// control characters is accepted here; URLs are stricter ([`split_ref`]).
    fn from_str(s: &str) -> Result<Self, Error> {
        if s.is_empty() || s.len() > 1024 || s.chars().any(char::is_control) {
            return Err(Error::invalid(format!(
                "{s:?} is not a branch name, commit id or tag"
            )));
        }
        Ok(Ref::Name(s.to_owned()))
    }
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Splits `PATH@ref` into the dataset URL and the ref (module docs for the rule).
pub fn split_ref(url: &str) -> (&str, Option<Ref>) {
    match url.rsplit_once('@') {
        Some((base, r)) if !base.is_empty() && !base.ends_with("://") && Ref::is_url_ref(r) => {
            (base, Some(Ref::Name(r.to_owned())))
        }
        _ => (url, None),
    }
}

/// The dataset's tags, from the newest commit-tree record (none for a dataset only
/// 3.x wrote).
pub async fn tags(store: &Store) -> Result<Tags> {
    Ok(super::log::load(store).await?.2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::vcinfo::CommitNode;
    use crate::ids::FIRST_COMMIT_ID;

    const C1: &str = "1111111111111111111111111111111111111111";
    const H: &str = "2222222222222222222222222222222222222222";
    const A: &str = "3333333333333333333333333333333333333333";

    /// root (committed) -> C1 (committed) -> H (head of main); C1 -> A (head of alt).
    /// One branch is named like a commit id to tell the two lookup orders apart.
    fn tree() -> VersionControlInfo {
        let mut t = VersionControlInfo::new_root();
        let done = |branch: &str, parent: Option<&str>| {
            let mut n = CommitNode::head(branch, parent.map(str::to_owned));
            n.commit_time = Some(1.0);
            n.commit_message = Some("m".into());
            n
        };
        t.commits
            .insert(FIRST_COMMIT_ID.into(), done("main", None).into());
        t.commits
            .insert(C1.into(), done("main", Some(FIRST_COMMIT_ID)).into());
        t.commits
            .insert(H.into(), CommitNode::head("main", Some(C1.into())).into());
        t.commits
            .insert(A.into(), CommitNode::head("alt", Some(C1.into())).into());
        t.branches.insert("main".into(), H.into());
        t.branches.insert("alt".into(), A.into());
        t.branches.insert(C1.into(), A.into());
        t
    }

    fn name(s: &str) -> Ref {
        s.parse().unwrap()
    }

    #[test]
    fn branch_first_then_commit_then_tag() {
        let t = tree();
        let mut tags = Tags::new();
        tags.insert("v1".into(), C1.into());
        tags.insert("alt".into(), FIRST_COMMIT_ID.into());
        let r = name("main").resolve(&t, &tags).unwrap();
        assert_eq!(
            (r.node.as_str(), r.branch.as_str(), r.kind),
            (H, "main", RefKind::Branch)
        );
        // A commit opens on the branch it was made on.
        let r = name(FIRST_COMMIT_ID).resolve(&t, &tags).unwrap();
        assert_eq!((r.branch.as_str(), r.kind), ("main", RefKind::Commit));
        let r = name("v1").resolve(&t, &tags).unwrap();
        assert_eq!((r.node.as_str(), r.kind), (C1, RefKind::Tag));
        // A branch shadows a tag of the same name.
        assert_eq!(name("alt").resolve(&t, &tags).unwrap().node.as_str(), A);
        assert_eq!(
            Ref::Tag("alt".into())
                .resolve(&t, &tags)
                .unwrap()
                .node
                .as_str(),
            FIRST_COMMIT_ID
        );
        // The branch named like commit C1: checkout takes the branch, diff the commit.
        assert_eq!(name(C1).resolve(&t, &tags).unwrap().node.as_str(), A);
        let d = name(C1).resolve_for_diff(&t, &tags).unwrap();
        assert_eq!((d.node.as_str(), d.kind), (C1, RefKind::Commit));
        assert_eq!(
            name("main")
                .resolve_for_diff(&t, &tags)
                .unwrap()
                .node
                .as_str(),
            H
        );
    }

    #[test]
    fn unknown_refs_are_not_found() {
        let t = tree();
        let e = name("nope").resolve(&t, &Tags::new()).unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{e}");
        assert!(e.to_string().contains("branch, commit or tag"), "{e}");
        assert!(Ref::Branch(C1.into()).resolve(&t, &Tags::new()).is_ok());
        assert!(Ref::Branch(H.into()).resolve(&t, &Tags::new()).is_err());
        let c: CommitId = "4444444444444444444444444444444444444444".parse().unwrap();
        assert!(Ref::Commit(c).resolve(&t, &Tags::new()).is_err());
        // A tag whose commit is not in the tree is corruption, not absence.
        let mut tags = Tags::new();
        tags.insert(
            "bad".into(),
            "5555555555555555555555555555555555555555".into(),
        );
        let e = name("bad").resolve(&t, &tags).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    }

    #[test]
    fn parse_accepts_3x_branch_names() {
        assert_eq!(name("feature/x"), Ref::Name("feature/x".into()));
        assert!("".parse::<Ref>().is_err());
        assert!("a\nb".parse::<Ref>().is_err());
        assert_eq!(name("main").to_string(), "main");
    }

    #[test]
    fn split_takes_the_last_valid_suffix_only() {
        let r = |s: &str| Some(Ref::Name(s.to_owned()));
        assert_eq!(split_ref("/data/ds@main"), ("/data/ds", r("main")));
        assert_eq!(
            split_ref("s3://b/p@v1.2_rc-3"),
            ("s3://b/p", r("v1.2_rc-3"))
        );
        let c = format!("s3://b/p@{C1}");
        assert_eq!(split_ref(&c), ("s3://b/p", r(C1)));
        assert_eq!(split_ref("s3://b/a@b/ds@alt"), ("s3://b/a@b/ds", r("alt")));
        assert_eq!(split_ref("memory://x@main"), ("memory://x", r("main")));
        for plain in [
            "/data/ds",
            "s3://b/a@b/ds",
            "s3://user@bucket/ds",
            "/data/ds@",
            "@main",
            "s3://@main",
            "/data/ds@main/",
            "/data/ds@.hidden",
            "/data/ds@-x",
            "/data/ds@a b",
            "/data/ds@a:b",
        ] {
            assert_eq!(split_ref(plain), (plain, None), "{plain}");
        }
        let long = format!("/d@{}", "a".repeat(129));
        assert_eq!(split_ref(&long), (long.as_str(), None));
    }
}
