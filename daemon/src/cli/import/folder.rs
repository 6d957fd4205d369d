//! Scanning a folder of class subfolders for `deeplake import --from-folder`.
//!
//! Every subfolder of DIR whose name does not start with `.` is a class; class names
//! are the sorted subfolder names (a class with no images keeps its name and index).
//! Files with a `.jpg`, `.jpeg` or `.png` extension (any case) anywhere below a class
//! folder are its images; other files, and files directly in DIR, are skipped and
//! counted. Rows follow class order, then path order inside a class. Nested folders are
//! entered only when they are real folders (not links), so a link cycle cannot make the
//! walk endless.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// What a scan found.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Scan {
    pub class_names: Vec<String>,
    /// Image files with their class index, in row order.
    pub files: Vec<(PathBuf, u32)>,
    /// Files that are not jpg/jpeg/png, or that sit directly in DIR.
    pub skipped: u64,
}

fn is_image_name(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
        ["jpg", "jpeg", "png"]
            .iter()
            .any(|x| e.eq_ignore_ascii_case(x))
    })
}

fn sorted_entries(dir: &Path) -> anyhow::Result<Vec<std::fs::DirEntry>> {
    let mut entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list folder {}", dir.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("cannot list folder {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    Ok(entries)
}

/// Collects the image files below a class folder, in path order.
fn walk(dir: &Path, class: u32, scan: &mut Scan) -> anyhow::Result<()> {
    for e in sorted_entries(dir)? {
        let path = e.path();
        let kind = e
            .file_type()
            .with_context(|| format!("cannot stat {}", path.display()))?;
        if kind.is_dir() {
            walk(&path, class, scan)?;
        } else if is_image_name(&path) && std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            scan.files.push((path, class));
        } else {
            scan.skipped += 1;
        }
    }
    Ok(())
}

/// Scans `dir`. Fails when it is missing, not a folder, or holds no images.
pub(crate) fn scan(dir: &Path) -> anyhow::Result<Scan> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => bail!("--from-folder {}: not a folder", dir.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("--from-folder {}: no such folder", dir.display())
        }
        Err(e) => return Err(e).with_context(|| format!("--from-folder {}", dir.display())),
    }
    let mut scan = Scan::default();
    let mut classes: Vec<(String, PathBuf)> = Vec::new();
    for e in sorted_entries(dir)? {
        let path = e.path();
        // Class folders may be links to folders elsewhere.
        let is_dir = std::fs::metadata(&path).is_ok_and(|m| m.is_dir());
        let name = e.file_name();
        if !is_dir {
            scan.skipped += 1;
            continue;
        }
        let Some(name) = name.to_str() else {
            bail!(
                "class folder {} has a name that is not valid UTF-8",
                path.display()
            );
        };
        if !name.starts_with('.') {
            classes.push((name.to_owned(), path));
        }
    }
    for (index, (name, path)) in classes.into_iter().enumerate() {
        let class = u32::try_from(index).context("too many class folders")?;
        walk(&path, class, &mut scan)?;
        scan.class_names.push(name);
    }
    if scan.files.is_empty() {
        bail!(
            "--from-folder {}: no .jpg, .jpeg or .png images in class subfolders ({} classes, {} other files)",
            dir.display(),
            scan.class_names.len(),
            scan.skipped
        );
    }
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_classes_and_images_in_order() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        for (rel, body) in [
            ("b/2.PNG", "x"),
            ("b/1.jpg", "x"),
            ("b/notes.txt", "x"),
            ("a/sub/3.JPEG", "x"),
            ("a/0.png", "x"),
            ("top.jpg", "x"),
            (".hidden/9.jpg", "x"),
        ] {
            let p = root.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, body).unwrap();
        }
        std::fs::create_dir(root.join("c")).unwrap();
        let s = scan(root).unwrap();
        assert_eq!(s.class_names, ["a", "b", "c"]);
        let rel: Vec<(String, u32)> = s
            .files
            .iter()
            .map(|(p, c)| {
                (
                    p.strip_prefix(root).unwrap().to_string_lossy().into_owned(),
                    *c,
                )
            })
            .collect();
        assert_eq!(
            rel,
            [
                ("a/0.png".to_owned(), 0),
                ("a/sub/3.JPEG".to_owned(), 0),
                ("b/1.jpg".to_owned(), 1),
                ("b/2.PNG".to_owned(), 1)
            ]
        );
        assert_eq!(s.skipped, 2);
    }

    #[test]
    fn missing_file_and_empty_folders_are_errors() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("nope");
        assert!(
            scan(&missing)
                .unwrap_err()
                .to_string()
                .contains("no such folder")
        );
        let file = d.path().join("f.jpg");
        std::fs::write(&file, "x").unwrap();
        assert!(
            scan(&file)
                .unwrap_err()
                .to_string()
                .contains("not a folder")
        );
        let empty = d.path().join("empty");
        std::fs::create_dir_all(empty.join("cls")).unwrap();
        std::fs::write(empty.join("cls/readme.md"), "x").unwrap();
        let e = scan(&empty).unwrap_err().to_string();
        assert!(
            e.contains("no .jpg, .jpeg or .png images") && e.contains("1 other files"),
            "{e}"
        );
    }
}
