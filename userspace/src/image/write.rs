//! Writing an image directory so that it is either complete and verified
//! or absent: every file goes to a hidden temporary directory beside the
//! target, is fsynced, and the directory is renamed into place only after
//! the manifest (written last) is on disk. A janitor process removes the
//! temporary directory if dumper dies before the rename, SIGKILL included.

use super::{checksum_hex, encode, FileSum, ImageError, Kind, Manifest, MANIFEST};
use serde::Serialize;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use xxhash_rust::xxh3::Xxh3;

pub struct ImageDir {
    target: PathBuf,
    tmp: PathBuf,
    files: Vec<FileSum>,
    janitor: Option<Child>,
    done: bool,
}

/// The directory `target` is made in.
fn parent_of(target: &Path) -> PathBuf {
    match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn fsync_dir(p: &Path) -> Result<(), ImageError> {
    File::open(p)
        .and_then(|d| d.sync_all())
        .map_err(|e| ImageError::io(p.display(), e))
}

impl ImageDir {
    /// Prepares to write the image directory `target`, which must not
    /// exist or be an empty directory.
    pub fn create(target: &Path) -> Result<ImageDir, ImageError> {
        let shown = target.display();
        match std::fs::read_dir(target) {
            Ok(mut d) => {
                if d.next().is_some() {
                    return Err(ImageError::bad(
                        shown,
                        "exists and is not empty: name a new directory or remove this one",
                    ));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ImageError::io(shown, e)),
        }
        let name = target
            .file_name()
            .ok_or_else(|| ImageError::bad(shown, "names no directory"))?
            .to_string_lossy()
            .into_owned();
        let parent = parent_of(target);
        std::fs::create_dir_all(&parent).map_err(|e| ImageError::io(parent.display(), e))?;
        let tmp = parent.join(format!(".{name}.dumper-{}.tmp", std::process::id()));
        // A leftover of a run whose janitor could not finish (a reboot).
        let _ = std::fs::remove_dir_all(&tmp);
        // The janitor first: dumper may be killed right after the mkdir.
        let janitor = spawn_janitor(&tmp)?;
        std::fs::create_dir(&tmp).map_err(|e| ImageError::io(tmp.display(), e))?;
        Ok(ImageDir {
            target: target.to_path_buf(),
            tmp,
            files: vec![],
            janitor,
            done: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Writes entry file `name`.
    pub fn entry<T: Serialize>(&mut self, name: &str, kind: Kind, v: &T) -> Result<(), ImageError> {
        let mut w = self.raw(name)?;
        w.write(&encode(kind, v))?;
        w.finish(self)
    }

    /// A raw file (page data) to be written in pieces.
    pub fn raw(&self, name: &str) -> Result<RawFile, ImageError> {
        let path = self.tmp.join(name);
        let f = File::create(&path).map_err(|e| ImageError::io(path.display(), e))?;
        Ok(RawFile {
            name: name.to_string(),
            f,
            hash: Xxh3::new(),
            size: 0,
        })
    }

    /// Writes the manifest (with every file's checksum), syncs, and renames
    /// the directory into place; the directory and the bytes in it.
    pub fn commit(mut self, mut manifest: Manifest) -> Result<(PathBuf, u64), ImageError> {
        manifest.files = std::mem::take(&mut self.files);
        let mut w = self.raw(MANIFEST)?;
        w.write(&encode(Kind::Manifest, &manifest))?;
        let bytes = w.size + manifest.files.iter().map(|f| f.size).sum::<u64>();
        w.f.sync_all().map_err(|e| ImageError::io(MANIFEST, e))?;
        fsync_dir(&self.tmp)?;
        // rename(2) replaces an empty directory, never a full one.
        std::fs::rename(&self.tmp, &self.target)
            .map_err(|e| ImageError::io(self.target.display(), e))?;
        self.done = true;
        fsync_dir(&parent_of(&self.target))?;
        Ok((self.target.clone(), bytes))
    }
}

impl Drop for ImageDir {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
        // Closing its stdin lets the janitor go (nothing left to remove).
        if let Some(mut j) = self.janitor.take() {
            drop(j.stdin.take());
            let _ = j.wait();
        }
    }
}

/// `dumper janitor DIR` (hidden): waits for its stdin to close, which
/// happens when dumper exits however it exits, then removes DIR if it is
/// still there. Without it a SIGKILL of dumper would leave the temporary
/// directory behind.
fn spawn_janitor(tmp: &Path) -> Result<Option<Child>, ImageError> {
    let Ok(exe) = std::env::current_exe() else {
        return Ok(None);
    };
    if exe.file_name().is_none_or(|n| n != "dumper") {
        // A library user (a test binary, the bench) cleans up by Drop.
        return Ok(None);
    }
    use std::os::unix::process::CommandExt;
    Command::new(&exe)
        .arg("janitor")
        .arg(tmp)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Out of dumper's process group: a Ctrl-C of dumper's terminal
        // must not take the janitor too.
        .process_group(0)
        .spawn()
        .map(Some)
        .map_err(|e| {
            ImageError::io(
                format!(
                    "{} janitor (removes a half-written image if dumper dies)",
                    exe.display()
                ),
                e,
            )
        })
}

/// The janitor's body.
pub fn janitor(tmp: &Path) {
    // SAFETY: ignoring signals in this process.
    unsafe {
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
            libc::signal(s, libc::SIG_IGN);
        }
    }
    let mut sink = [0u8; 64];
    loop {
        match std::io::Read::read(&mut std::io::stdin(), &mut sink) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    let _ = std::fs::remove_dir_all(tmp);
}

/// One file of the image being written, checksummed as it goes.
pub struct RawFile {
    name: String,
    f: File,
    hash: Xxh3,
    size: u64,
}

impl RawFile {
    pub fn write(&mut self, b: &[u8]) -> Result<(), ImageError> {
        self.hash.update(b);
        self.size += b.len() as u64;
        self.f
            .write_all(b)
            .map_err(|e| ImageError::io(&self.name, e))
    }

    /// Pages written so far.
    pub fn pages(&self) -> u64 {
        self.size / super::PAGE_SIZE
    }

    /// Syncs the file and records its checksum for the manifest.
    pub fn finish(self, dir: &mut ImageDir) -> Result<(), ImageError> {
        self.f
            .sync_all()
            .map_err(|e| ImageError::io(&self.name, e))?;
        log_debug!("image file {}: {} bytes, synced", self.name, self.size);
        dir.files.push(FileSum {
            name: self.name,
            size: self.size,
            xxh3_128: checksum_hex(self.hash.digest128()),
        });
        Ok(())
    }
}
