//! The model catalog: `<catalog_dir>/models/<id>/` folders, each with a `metadata.json`
//! (upstream's entry) or, for a model a user copied there by hand, just a `.gguf` file.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::artifact::{ArtifactStatus, Entry, ModelArtifact};
use crate::disk::{self, DownloadLock, METADATA};
use crate::error::CatalogError;
use crate::id::CatalogId;

/// What an interrupted download's entry says.
const INTERRUPTED: &str = "interrupted: the download stopped before it finished (the hive exited); download it again to resume (model_download, or rbee-hive model download)";

/// The models of one catalog folder. Cheap to clone; every call reads the disk, so changes
/// made by hand or by another process are seen at once.
#[derive(Debug, Clone)]
pub struct ModelCatalog {
    dir: PathBuf,
}

impl ModelCatalog {
    /// The model catalog under `catalog_dir` (`<catalog_dir>/models`). Nothing is created
    /// until something is downloaded.
    pub fn new(catalog_dir: &Path) -> Self {
        Self {
            dir: catalog_dir.join("models"),
        }
    }

    /// `<catalog_dir>/models`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The folder of entry `id`.
    pub fn folder(&self, id: &CatalogId) -> PathBuf {
        self.dir.join(id.as_str())
    }

    /// Every entry, by id. Folders that are not entries (no metadata and no `.gguf` file,
    /// names that are not ids, links) are left out.
    pub fn list(&self) -> Result<Vec<Entry<ModelArtifact>>, CatalogError> {
        let mut entries = Vec::new();
        for id in self.ids()? {
            if let Some(entry) = self.read_entry(&id)? {
                entries.push(entry);
            }
        }
        Ok(entries)
    }

    /// One entry.
    pub fn get(&self, id: &CatalogId) -> Result<Entry<ModelArtifact>, CatalogError> {
        match self.read_entry(id)? {
            Some(entry) => Ok(entry),
            None => Err(self.not_found(id)),
        }
    }

    /// Whether entry `id` exists (in any status).
    pub fn contains(&self, id: &CatalogId) -> bool {
        self.read_entry(id).is_ok_and(|entry| entry.is_some())
    }

    /// Removes entry `id` and everything in its folder; refused while it downloads.
    pub fn remove(&self, id: &CatalogId) -> Result<Entry<ModelArtifact>, CatalogError> {
        let entry = self.get(id)?;
        let folder = self.folder(id);
        if DownloadLock::is_held(&folder) {
            return Err(CatalogError::Downloading { id: id.to_string() });
        }
        // `remove_dir_all` does not follow symbolic links inside the folder, and the folder
        // itself was checked to be a real one by `get`.
        std::fs::remove_dir_all(&folder).map_err(|e| CatalogError::io("remove", &folder, e))?;
        disk::sync_dir(&self.dir).map_err(|e| CatalogError::io("sync", &self.dir, e))?;
        Ok(entry)
    }

    /// The file a worker is given for model `id`: the entry must be `Available`, and its
    /// path a regular file inside the entry's folder.
    pub fn model_file(&self, id: &CatalogId) -> Result<PathBuf, CatalogError> {
        let entry = self.get(id)?;
        let unusable = |reason: String| CatalogError::Unusable {
            id: id.to_string(),
            reason,
        };
        match &entry.artifact.status {
            ArtifactStatus::Available => {}
            ArtifactStatus::Downloading => return Err(unusable("it is still downloading".into())),
            ArtifactStatus::Failed { error } => {
                return Err(unusable(format!("its download failed: {error}")));
            }
        }
        let path = disk::inside(&self.folder(id), &entry.artifact.path).ok_or_else(|| {
            unusable(format!(
                "its file {} is missing or outside its catalog folder",
                entry.artifact.path.display()
            ))
        })?;
        if !path.is_file() {
            return Err(unusable(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        Ok(path)
    }

    /// The ids of the catalog, sorted (an absent catalog folder is an empty catalog).
    pub fn ids(&self) -> Result<Vec<CatalogId>, CatalogError> {
        entry_ids(&self.dir)
    }

    pub(crate) fn not_found(&self, id: &CatalogId) -> CatalogError {
        CatalogError::NotFound {
            id: id.to_string(),
            dir: self.dir.clone(),
            known: self
                .ids()
                .unwrap_or_default()
                .into_iter()
                .filter(|id| self.read_entry(id).is_ok_and(|e| e.is_some()))
                .map(|id| id.to_string())
                .collect(),
        }
    }

    /// Entry `id` as its folder shows it now; `None` when there is none.
    pub(crate) fn read_entry(
        &self,
        id: &CatalogId,
    ) -> Result<Option<Entry<ModelArtifact>>, CatalogError> {
        let folder = self.folder(id);
        if !disk::is_real_dir(&folder) {
            return Ok(None);
        }
        let metadata = folder.join(METADATA);
        if disk::is_real_file(&metadata) {
            return Ok(Some(read_metadata(id, &folder, &metadata)));
        }
        Ok(hand_placed(id, &folder))
    }

    /// Writes entry metadata (atomically), creating the folder if needed.
    pub(crate) fn write_entry(&self, entry: &Entry<ModelArtifact>) -> Result<(), CatalogError> {
        let id = CatalogId::parse(&entry.artifact.id)?;
        let folder = self.folder(&id);
        std::fs::create_dir_all(&folder).map_err(|e| CatalogError::io("create", &folder, e))?;
        disk::write_json_atomic(&folder.join(METADATA), entry)
    }
}

/// The ids of the entry folders under `dir`: real folders whose names are valid ids.
pub(crate) fn entry_ids(dir: &Path) -> Result<Vec<CatalogId>, CatalogError> {
    let read = match std::fs::read_dir(dir) {
        Ok(read) => read,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(CatalogError::io("read", dir, error)),
    };
    let mut ids: Vec<CatalogId> = read
        .filter_map(Result::ok)
        .filter(|item| item.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|item| CatalogId::parse(item.file_name().to_str()?).ok())
        .collect();
    ids.sort();
    Ok(ids)
}

fn read_metadata(id: &CatalogId, folder: &Path, metadata: &Path) -> Entry<ModelArtifact> {
    let parsed = std::fs::read(metadata)
        .map_err(|e| e.to_string())
        .and_then(|bytes| {
            serde_json::from_slice::<Entry<ModelArtifact>>(&bytes).map_err(|e| e.to_string())
        });
    match parsed {
        Ok(mut entry) => {
            // The folder's name is the id; a copied folder may carry another one inside.
            entry.artifact.id = id.to_string();
            if entry.artifact.status == ArtifactStatus::Downloading
                && !DownloadLock::is_held(folder)
            {
                entry.artifact.status = ArtifactStatus::Failed {
                    error: INTERRUPTED.to_owned(),
                };
            }
            entry
        }
        Err(reason) => {
            let now = modified(metadata);
            Entry {
                artifact: ModelArtifact {
                    id: id.to_string(),
                    name: id.to_string(),
                    path: folder.to_path_buf(),
                    size: 0,
                    status: ArtifactStatus::Failed {
                        error: format!("unreadable {METADATA}: {reason}"),
                    },
                    added_at: now,
                },
                added_at: now,
                last_accessed: now,
            }
        }
    }
}

/// An entry for a folder that holds a `.gguf` file and no metadata: the largest such file.
fn hand_placed(id: &CatalogId, folder: &Path) -> Option<Entry<ModelArtifact>> {
    let (path, size) = std::fs::read_dir(folder)
        .ok()?
        .filter_map(Result::ok)
        .filter(|item| item.file_type().is_ok_and(|t| t.is_file()))
        .filter(|item| {
            item.file_name().to_str().is_some_and(|name| {
                name.to_ascii_lowercase().ends_with(".gguf") && !name.starts_with('.')
            })
        })
        .filter_map(|item| Some((item.path(), item.metadata().ok()?.len())))
        .max_by_key(|(_, size)| *size)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| n[..n.len() - ".gguf".len()].to_owned())
        .unwrap_or_else(|| id.to_string());
    let added_at = modified(&path);
    Some(Entry {
        artifact: ModelArtifact {
            id: id.to_string(),
            name,
            path,
            size,
            status: ArtifactStatus::Available,
            added_at,
        },
        added_at,
        last_accessed: added_at,
    })
}

fn modified(path: &Path) -> DateTime<Utc> {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map(DateTime::<Utc>::from)
        .unwrap_or_else(|_| Utc::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> CatalogId {
        CatalogId::parse(text).unwrap()
    }

    #[test]
    fn lists_metadata_entries_and_hand_placed_files() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = ModelCatalog::new(dir.path());
        assert!(catalog.list().unwrap().is_empty());

        let hand = dir.path().join("models/hand");
        std::fs::create_dir_all(&hand).unwrap();
        std::fs::write(hand.join("small.gguf"), b"12").unwrap();
        std::fs::write(hand.join("Big.GGUF"), b"12345").unwrap();
        std::fs::write(hand.join("notes.txt"), b"123456789").unwrap();
        std::fs::create_dir_all(dir.path().join("models/empty")).unwrap();
        std::fs::create_dir_all(dir.path().join("models/.hidden")).unwrap();
        std::fs::write(dir.path().join("models/.hidden/x.gguf"), b"1").unwrap();

        let now = Utc::now();
        let written = Entry {
            artifact: ModelArtifact {
                id: "meta".into(),
                name: "Meta".into(),
                path: dir.path().join("models/meta/m.gguf"),
                size: 7,
                status: ArtifactStatus::Available,
                added_at: now,
            },
            added_at: now,
            last_accessed: now,
        };
        catalog.write_entry(&written).unwrap();

        let listed = catalog.list().unwrap();
        let ids: Vec<_> = listed.iter().map(|e| e.artifact.id.as_str()).collect();
        assert_eq!(ids, ["hand", "meta"]);
        assert_eq!(listed[0].artifact.name, "Big");
        assert_eq!(listed[0].artifact.size, 5);
        assert_eq!(listed[1], written);
        assert_eq!(
            catalog.model_file(&id("hand")).unwrap(),
            hand.join("Big.GGUF").canonicalize().unwrap()
        );
        // The metadata names a file that is not there.
        assert!(catalog.model_file(&id("meta")).is_err());
        let missing = catalog.get(&id("nope")).unwrap_err().to_string();
        assert!(missing.contains("known ids: hand, meta"), "{missing}");
    }

    #[test]
    fn a_downloading_entry_without_its_lock_reads_as_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = ModelCatalog::new(dir.path());
        let now = Utc::now();
        let mut entry = Entry {
            artifact: ModelArtifact {
                id: "d".into(),
                name: "d".into(),
                path: dir.path().join("models/d/d.gguf"),
                size: 0,
                status: ArtifactStatus::Downloading,
                added_at: now,
            },
            added_at: now,
            last_accessed: now,
        };
        catalog.write_entry(&entry).unwrap();
        assert_eq!(
            catalog.get(&id("d")).unwrap().artifact.status.word(),
            "failed"
        );
        let lock = DownloadLock::try_acquire(&catalog.folder(&id("d")))
            .unwrap()
            .unwrap();
        assert_eq!(
            catalog.get(&id("d")).unwrap().artifact.status,
            ArtifactStatus::Downloading
        );
        assert!(matches!(
            catalog.remove(&id("d")),
            Err(CatalogError::Downloading { .. })
        ));
        drop(lock);
        entry.artifact.status = ArtifactStatus::Available;
        catalog.remove(&id("d")).unwrap();
        assert!(!catalog.folder(&id("d")).exists());
    }

    #[test]
    fn removal_never_follows_links_out_of_the_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("keep.gguf"), b"1").unwrap();
        let models = dir.path().join("cat/models");
        std::fs::create_dir_all(models.join("inner")).unwrap();
        std::fs::write(models.join("inner/m.gguf"), b"1").unwrap();
        std::os::unix::fs::symlink(&outside, models.join("inner/link")).unwrap();
        std::os::unix::fs::symlink(&outside, models.join("linked")).unwrap();
        let catalog = ModelCatalog::new(&dir.path().join("cat"));
        assert!(
            catalog.get(&id("linked")).is_err(),
            "a linked folder is no entry"
        );
        catalog.remove(&id("inner")).unwrap();
        assert!(outside.join("keep.gguf").exists());
    }
}
