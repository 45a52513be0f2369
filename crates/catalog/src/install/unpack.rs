//! A verified download made into an entry folder's files: a `.tar.gz` unpacked (entries
//! with `..`, absolute paths, links pointing outside, or special files refused) or a bare
//! executable copied, and the worker's executable found among the files. Blocking: run it
//! on a blocking thread.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// What the downloaded file is, by its first bytes (a name can lie).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Payload {
    /// gzip: a `.tar.gz` / `.tgz`.
    TarGz,
    /// An ELF program or a `#!` script.
    Executable,
}

impl Payload {
    /// The kind of `file`, or why it is neither.
    pub(crate) fn sniff(file: &Path) -> Result<Self, String> {
        let mut head = [0u8; 4];
        let mut opened = std::fs::File::open(file).map_err(|e| e.to_string())?;
        let n = opened.read(&mut head).map_err(|e| e.to_string())?;
        match &head[..n] {
            [0x1f, 0x8b, ..] => Ok(Self::TarGz),
            [0x7f, b'E', b'L', b'F'] => Ok(Self::Executable),
            [b'#', b'!', ..] => Ok(Self::Executable),
            _ => Err(
                "it is neither a .tar.gz archive nor an executable (ELF or #! script)".to_owned(),
            ),
        }
    }
}

/// Unpacks the `.tar.gz` at `archive` into the empty folder `into`; refuses the whole
/// archive on the first unsafe entry. Returns the number of entries.
pub(crate) fn unpack_tar_gz(archive: &Path, into: &Path) -> Result<usize, String> {
    let file = std::fs::File::open(archive).map_err(|e| e.to_string())?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    tar.set_preserve_permissions(false);
    tar.set_preserve_mtime(false);
    tar.set_overwrite(false);
    let mut count = 0;
    for entry in tar
        .entries()
        .map_err(|e| format!("unreadable archive: {e}"))?
    {
        let mut entry = entry.map_err(|e| format!("unreadable archive: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("an entry's name is unreadable: {e}"))?
            .into_owned();
        let shown = path.display().to_string();
        check_relative(&path).map_err(|why| format!("entry '{shown}' {why}"))?;
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::Directory => {}
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| format!("entry '{shown}': unreadable link: {e}"))?
                    .ok_or_else(|| format!("entry '{shown}' is a link without a target"))?
                    .into_owned();
                // A symbolic link resolves against the folder it sits in.
                let base = path.parent().unwrap_or(Path::new(""));
                if target.is_absolute() || !stays_inside(&base.join(&target)) {
                    return Err(format!(
                        "entry '{shown}' links to '{}', outside the archive",
                        target.display()
                    ));
                }
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| format!("entry '{shown}': unreadable link: {e}"))?
                    .ok_or_else(|| format!("entry '{shown}' is a link without a target"))?
                    .into_owned();
                // A hard link names another entry of the archive, from its root.
                check_relative(&target).map_err(|why| {
                    format!(
                        "entry '{shown}' links to '{}', which {why}",
                        target.display()
                    )
                })?;
            }
            other => {
                return Err(format!(
                    "entry '{shown}' is a {other:?} entry; only files, folders and links are installed"
                ));
            }
        }
        entry.set_unpack_xattrs(false);
        let unpacked = entry
            .unpack_in(into)
            .map_err(|e| format!("cannot unpack entry '{shown}': {e}"))?;
        if !unpacked {
            return Err(format!("entry '{shown}' would land outside the folder"));
        }
        if kind == tar::EntryType::Directory {
            // tar applies the archive's mode to folders; one without write or search
            // permission would stop the next entries and every later removal of the entry.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(into.join(&path), std::fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("cannot open up folder '{shown}': {e}"))?;
        }
        count += 1;
    }
    if count == 0 {
        return Err("the archive is empty".to_owned());
    }
    // Each link was checked against the path it was written at; one written through an
    // earlier link lands elsewhere. What counts is where every link resolves now.
    links_stay_inside(into)?;
    Ok(count)
}

/// Refuses a folder holding a symbolic link that resolves outside it, or to nothing.
fn links_stay_inside(root: &Path) -> Result<(), String> {
    let canonical_root = std::fs::canonicalize(root).map_err(|e| e.to_string())?;
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).map_err(|e| e.to_string())? {
            let entry = entry.map_err(|e| e.to_string())?;
            let kind = entry.file_type().map_err(|e| e.to_string())?;
            let path = entry.path();
            let shown = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .display()
                .to_string();
            if kind.is_symlink() {
                let resolved = std::fs::canonicalize(&path)
                    .map_err(|_| format!("link '{shown}' leads nowhere in the archive"))?;
                if !resolved.starts_with(&canonical_root) {
                    return Err(format!("link '{shown}' leads outside the archive"));
                }
            } else if kind.is_dir() {
                folders.push(path);
            }
        }
    }
    Ok(())
}

/// `Ok` when `path` is relative and has no `..` (nor a root or prefix).
fn check_relative(path: &Path) -> Result<(), &'static str> {
    for component in path.components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err("contains '..'"),
            Component::RootDir | Component::Prefix(_) => return Err("is an absolute path"),
        }
    }
    if path.as_os_str().is_empty() {
        return Err("has an empty name");
    }
    Ok(())
}

/// Whether `path` (relative, may hold `..`) stays inside its root when `..` is applied.
fn stays_inside(path: &Path) -> bool {
    let mut depth = 0usize;
    for component in path.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return false,
            },
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

/// A regular file found in an unpacked folder.
struct Found {
    /// Its name, or the name of the link that leads to it.
    name: std::ffi::OsString,
    /// The file itself, relative to the folder.
    path: PathBuf,
    /// How deep the name sits.
    depth: usize,
    /// Whether it has an execute bit.
    executable: bool,
}

/// The worker's executable in `folder` (relative to it): the first of `names` found (the
/// shallowest when several share a name), else the only file with an execute bit, else the
/// only file. Links are followed only when they stay inside `folder`.
pub(crate) fn find_executable(folder: &Path, names: &[String]) -> Result<PathBuf, String> {
    let root = folder.canonicalize().map_err(|e| e.to_string())?;
    let mut files: Vec<Found> = Vec::new();
    walk(&root, &root, &mut files, 0)?;
    files.sort_by(|a, b| (a.depth, &a.path).cmp(&(b.depth, &b.path)));
    for name in names {
        if let Some(found) = files.iter().find(|f| f.name == name.as_str()) {
            return Ok(found.path.clone());
        }
    }
    let mut distinct: Vec<&Found> = Vec::new();
    for found in &files {
        if !distinct.iter().any(|d| d.path == found.path) {
            distinct.push(found);
        }
    }
    let executables: Vec<&&Found> = distinct.iter().filter(|f| f.executable).collect();
    if let [only] = executables.as_slice() {
        return Ok(only.path.clone());
    }
    if let [only] = distinct.as_slice() {
        return Ok(only.path.clone());
    }
    let listed: Vec<String> = distinct
        .iter()
        .take(10)
        .map(|f| f.path.display().to_string())
        .collect();
    Err(format!(
        "cannot tell which file is the worker: none is named {} and {} files are there ({})",
        names.join(" or "),
        distinct.len(),
        listed.join(", ")
    ))
}

/// Every regular file under `dir`, and every link under it that resolves to one inside
/// `root`.
fn walk(root: &Path, dir: &Path, files: &mut Vec<Found>, depth: usize) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    if depth > 32 {
        return Err("the archive's folders are nested too deep".to_owned());
    }
    let entries = std::fs::read_dir(dir).map_err(|e| e.to_string())?;
    for entry in entries {
        let entry = entry.map_err(|e| e.to_string())?;
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).map_err(|e| e.to_string())?;
        if meta.is_dir() {
            walk(root, &path, files, depth + 1)?;
            continue;
        }
        let target = if meta.file_type().is_symlink() {
            match path.canonicalize() {
                Ok(resolved) if resolved.starts_with(root) => resolved,
                _ => continue,
            }
        } else {
            path.clone()
        };
        let Ok(target_meta) = std::fs::metadata(&target) else {
            continue;
        };
        if !target_meta.is_file() {
            continue;
        }
        files.push(Found {
            name: entry.file_name(),
            path: target
                .strip_prefix(root)
                .map_err(|e| e.to_string())?
                .to_path_buf(),
            depth,
            executable: target_meta.permissions().mode() & 0o111 != 0,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_gz(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        build(&mut builder);
        let raw = builder.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &raw).unwrap();
        gz.finish().unwrap()
    }

    fn file_header(size: u64, mode: u32) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(mode);
        header.set_entry_type(tar::EntryType::Regular);
        header
    }

    /// Writes a raw name into the header, bypassing the builder's own path checks (a
    /// hostile archive is not built with them).
    fn raw_entry(
        builder: &mut tar::Builder<Vec<u8>>,
        name: &str,
        kind: tar::EntryType,
        link: &str,
    ) {
        let mut header = tar::Header::new_gnu();
        header.set_size(if kind == tar::EntryType::Regular {
            2
        } else {
            0
        });
        header.set_mode(0o755);
        header.set_entry_type(kind);
        let gnu = header.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_cksum();
        let data: &[u8] = if kind == tar::EntryType::Regular {
            b"hi"
        } else {
            b""
        };
        builder.append(&header, data).unwrap();
    }

    fn unpack(bytes: &[u8]) -> (tempfile::TempDir, Result<usize, String>) {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.tar.gz");
        std::fs::write(&archive, bytes).unwrap();
        let into = dir.path().join("into");
        std::fs::create_dir(&into).unwrap();
        let result = unpack_tar_gz(&archive, &into);
        (dir, result)
    }

    #[test]
    fn unpacks_a_release_archive_and_finds_the_worker() {
        let bytes = tar_gz(|b| {
            let mut h = file_header(10, 0o755);
            b.append_data(&mut h, "w-1.0/bin/llm-worker", &b"#!/bin/sh\n"[..])
                .unwrap();
            let mut h = file_header(3, 0o644);
            b.append_data(&mut h, "w-1.0/README", &b"hi\n"[..]).unwrap();
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            b.append_link(&mut h, "w-1.0/worker", "bin/llm-worker")
                .unwrap();
        });
        let (dir, result) = unpack(&bytes);
        assert_eq!(result, Ok(3));
        let into = dir.path().join("into");
        assert_eq!(
            find_executable(&into, &["llm-worker".into()]).unwrap(),
            PathBuf::from("w-1.0/bin/llm-worker")
        );
        // No name matches: the only executable file.
        assert_eq!(
            find_executable(&into, &["other".into()]).unwrap(),
            PathBuf::from("w-1.0/bin/llm-worker")
        );
    }

    #[test]
    fn refuses_paths_that_leave_the_folder() {
        for (name, kind, link, why) in [
            ("../evil", tar::EntryType::Regular, "", "contains '..'"),
            ("a/../../evil", tar::EntryType::Regular, "", "contains '..'"),
            ("/etc/evil", tar::EntryType::Regular, "", "absolute"),
            ("a/link", tar::EntryType::Symlink, "/etc/passwd", "outside"),
            ("a/link", tar::EntryType::Symlink, "../../x", "outside"),
            ("hard", tar::EntryType::Link, "../x", "contains '..'"),
            ("fifo", tar::EntryType::Fifo, "", "only files"),
        ] {
            let bytes = tar_gz(|b| raw_entry(b, name, kind, link));
            let (dir, result) = unpack(&bytes);
            let error = result.unwrap_err();
            assert!(error.contains(why), "{name} -> {link}: {error}");
            assert!(!dir.path().join("evil").exists());
            assert!(!dir.path().join("into/a/link").exists(), "{name}");
        }
        // A link inside the archive is fine.
        let bytes = tar_gz(|b| {
            raw_entry(b, "a/w", tar::EntryType::Regular, "");
            raw_entry(b, "a/link", tar::EntryType::Symlink, "../a/w");
        });
        assert_eq!(unpack(&bytes).1, Ok(2));
    }

    #[test]
    fn refuses_a_link_written_through_an_earlier_link_that_leads_outside() {
        // Each link alone stays inside by its own path; the second is written through the
        // first (into the root) and from there leads out.
        let bytes = tar_gz(|b| {
            raw_entry(b, "a/b/up", tar::EntryType::Symlink, "../..");
            raw_entry(
                b,
                "a/b/up/esc",
                tar::EntryType::Symlink,
                "../../../etc/passwd",
            );
        });
        let error = unpack(&bytes).1.unwrap_err();
        assert!(error.contains("leads outside"), "{error}");
    }

    #[test]
    fn a_folder_without_write_permission_in_the_archive_is_opened_up() {
        let bytes = tar_gz(|b| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            h.set_mode(0o555);
            b.append_data(&mut h, "w/bin", std::io::empty()).unwrap();
            let mut h = file_header(10, 0o755);
            b.append_data(&mut h, "w/bin/llm-worker", &b"#!/bin/sh\n"[..])
                .unwrap();
        });
        let (dir, result) = unpack(&bytes);
        assert_eq!(result, Ok(2));
        // And the whole folder can be removed again.
        std::fs::remove_dir_all(dir.path().join("into")).unwrap();
    }

    #[test]
    fn sniffs_payloads() {
        let dir = tempfile::tempdir().unwrap();
        let check = |bytes: &[u8]| {
            let path = dir.path().join("f");
            std::fs::write(&path, bytes).unwrap();
            Payload::sniff(&path)
        };
        assert_eq!(check(&tar_gz(|_| {})), Ok(Payload::TarGz));
        assert_eq!(check(b"\x7fELF\x02\x01"), Ok(Payload::Executable));
        assert_eq!(check(b"#!/bin/sh\necho"), Ok(Payload::Executable));
        assert!(check(b"<html>").is_err());
        assert!(check(b"").is_err());
    }
}
