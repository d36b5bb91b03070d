//! A target from a dump's images (`dumper plan -D DIR`): the dumped tree
//! under a pid 1 that stands for the restorer.

use super::target::{File, Kind, Proc, Target};
use crate::image::read::Image;
use crate::model::FileType;
use std::collections::{BTreeMap, BTreeSet};

/// The peer of unix socket `ino` when the two are a pair the restore can
/// make (unbound, the peer in the tree).
pub fn pair_of(img: &Image, ino: u64) -> Option<u64> {
    img.inventory
        .sockets
        .iter()
        .find(|s| s.ino == ino)
        .filter(|s| !s.bound && s.peer_in_tree && s.peer != 0)
        .map(|s| s.peer)
}

pub fn target(img: &Image) -> Result<Target, String> {
    let snap = &img.inventory.snapshot;
    let pids: BTreeSet<i32> = snap.tasks.iter().map(|t| t.pid).collect();
    if pids.contains(&1) {
        return Err("the dump holds pid 1 itself: a namespace dump, which restores with --pidns (not planned here yet)".into());
    }
    let mut t = Target::default();
    t.procs.insert(1, Proc::INIT);
    let root = img.manifest.root;
    let r = snap
        .task(root)
        .ok_or_else(|| format!("the image has no root process {root}"))?;
    // The root's session and group come from outside the tree unless it
    // leads them (or they lie inside it).
    for (what, id) in [("session", r.sid), ("process group", r.pgid)] {
        if !pids.contains(&id) {
            return Err(format!(
                "the tree's root {root} is in {what} {id}, which is outside the dumped tree: restoring it needs --shell-job (the containers issue)"
            ));
        }
    }
    for task in &snap.tasks {
        let ppid = if task.pid == root { 1 } else { task.ppid };
        t.procs.insert(
            task.pid,
            Proc {
                pid: task.pid,
                ppid,
                pgid: task.pgid,
                sid: task.sid,
                zombie: task.state == "Z",
                subreaper: task.detail.as_ref().is_some_and(|d| d.subreaper),
            },
        );
    }
    // Files: pipes by inode (the read end and the write end), everything
    // else as a plain description (socket peers are not in the image).
    let mut pipe_ends: BTreeMap<u64, (Option<String>, Option<String>)> = BTreeMap::new();
    let mut socket_ids: BTreeMap<u64, String> = BTreeMap::new();
    for task in snap.tasks.iter().filter(|t| t.state != "Z") {
        let mut fds = BTreeMap::new();
        for f in &task.fds {
            let id = format!("f{}", f.file_id);
            if f.kind == FileType::Unix && pair_of(img, f.ino).is_some() {
                // Made with its peer by the Socketpair loop below.
                socket_ids.entry(f.ino).or_insert_with(|| id.clone());
            } else if f.kind == FileType::Pipe {
                let e = pipe_ends.entry(f.ino).or_default();
                if f.flags & libc::O_ACCMODE as u32 == libc::O_WRONLY as u32 {
                    e.1 = Some(id.clone());
                } else {
                    e.0 = Some(id.clone());
                }
            } else {
                t.files.insert(id.clone(), File::REG);
            }
            fds.insert(f.fd, id);
        }
        if !fds.is_empty() {
            t.fds.insert(task.pid, fds);
        }
    }
    // Unix socket pairs with both ends in the tree: each pair once.
    for (&ino, a) in &socket_ids {
        let peer = pair_of(img, ino).unwrap_or(0);
        if ino < peer {
            let b = socket_ids
                .get(&peer)
                .cloned()
                .unwrap_or_else(|| format!("sock{peer}"));
            t.files.extend(File::pair(Kind::Socket, a, &b));
        } else if !socket_ids.contains_key(&peer) {
            // Its peer is in the tree but in no fd (only in flight).
            t.files
                .extend(File::pair(Kind::Socket, &format!("sock{peer}"), a));
        }
    }
    for (ino, (r, w)) in pipe_ends {
        let r = r.unwrap_or_else(|| format!("pipe{ino}r"));
        let w = w.unwrap_or_else(|| format!("pipe{ino}w"));
        t.files.extend(File::pair(Kind::Pipe, &r, &w));
    }
    // Processes sharing an fd table (CLONE_FILES); threads share their
    // process's anyway.
    let mut tables: BTreeMap<u32, Vec<i32>> = BTreeMap::new();
    for task in &snap.tasks {
        if let Some(id) = task.fd_table {
            tables.entry(id).or_default().push(task.pid);
        }
    }
    t.tables = tables.into_values().filter(|g| g.len() > 1).collect();
    super::validate(&t.to_file())
}
