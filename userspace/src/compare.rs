//! Field-by-field agreement of two snapshots of one tree.

use crate::model::{Snapshot, Task, TaskDetail};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    /// Where: `task 123 fd 7 pos`, `task 123 vma 7f00..-7f01.. prot`.
    pub path: String,
    /// The value each collector gave, in collector order (`"absent"`
    /// where one collector has no such entry).
    pub values: Vec<Value>,
}

/// `["present", "absent"]` when only the first side has the entry.
fn presence(first: bool) -> Vec<Value> {
    let (p, a) = (Value::from("present"), Value::from("absent"));
    if first {
        vec![p, a]
    } else {
        vec![a, p]
    }
}

fn fields(v: &impl Serialize) -> BTreeMap<String, Value> {
    match serde_json::to_value(v) {
        Ok(Value::Object(m)) => m.into_iter().collect(),
        _ => BTreeMap::new(),
    }
}

fn diff_fields(
    path: &str,
    a: &impl Serialize,
    b: &impl Serialize,
    skip: &[&str],
    out: &mut Vec<Mismatch>,
) {
    let (fa, fb) = (fields(a), fields(b));
    for (k, va) in &fa {
        if skip.contains(&k.as_str()) {
            continue;
        }
        let vb = fb.get(k).unwrap_or(&Value::Null);
        if va != vb {
            out.push(Mismatch {
                path: format!("{path} {k}"),
                values: vec![va.clone(), vb.clone()],
            });
        }
    }
}

/// Pairs items by key; reports the unpaired and diffs the paired.
fn diff_keyed<T: Serialize, K: Ord + Copy>(
    path: &str,
    a: &[T],
    b: &[T],
    key: impl Fn(&T) -> K,
    label: impl Fn(K) -> String,
    out: &mut Vec<Mismatch>,
) {
    let ma: BTreeMap<K, &T> = a.iter().map(|x| (key(x), x)).collect();
    let mb: BTreeMap<K, &T> = b.iter().map(|x| (key(x), x)).collect();
    for (k, xa) in &ma {
        let p = format!("{path}{}", label(*k));
        match mb.get(k) {
            Some(xb) => diff_fields(&p, xa, xb, &[], out),
            None => out.push(Mismatch {
                path: p,
                values: presence(true),
            }),
        }
    }
    for k in mb.keys().filter(|k| !ma.contains_key(k)) {
        out.push(Mismatch {
            path: format!("{path}{}", label(*k)),
            values: presence(false),
        });
    }
}

/// Diffs two arrays entry by entry; entries are labelled from `first`.
fn diff_indexed<T: Serialize>(p: &str, a: &[T], b: &[T], first: usize, out: &mut Vec<Mismatch>) {
    for i in 0..a.len().max(b.len()) {
        let label = format!("{p} {}", i + first);
        match (a.get(i), b.get(i)) {
            (Some(x), Some(y)) => diff_fields(&label, x, y, &[], out),
            (x, _) => out.push(Mismatch {
                path: label,
                values: presence(x.is_some()),
            }),
        }
    }
}

fn diff_detail(p: &str, a: &Option<TaskDetail>, b: &Option<TaskDetail>, out: &mut Vec<Mismatch>) {
    let p = format!("{p} detail");
    // Collected by one side only: a collector that could not fill it.
    if a.is_some() != b.is_some() {
        out.push(Mismatch {
            path: p.clone(),
            values: presence(a.is_some()),
        });
    }
    if let (Some(a), Some(b)) = (a, b) {
        diff_fields(&p, a, b, &["sigactions", "threads", "rlimits"], out);
        diff_indexed(&format!("{p} signal"), &a.sigactions, &b.sigactions, 1, out);
        diff_indexed(&format!("{p} rlimit"), &a.rlimits, &b.rlimits, 0, out);
        diff_keyed(
            &p,
            &a.threads,
            &b.threads,
            |t| t.tid,
            |k| format!(" thread {k}"),
            out,
        );
    }
}

fn diff_task(a: &Task, b: &Task, out: &mut Vec<Mismatch>) {
    let p = format!("task {}", a.pid);
    diff_fields(&p, a, b, &["fds", "vmas", "detail"], out);
    diff_detail(&p, &a.detail, &b.detail, out);
    diff_keyed(&p, &a.fds, &b.fds, |f| f.fd, |k| format!(" fd {k}"), out);
    diff_keyed(
        &p,
        &a.vmas,
        &b.vmas,
        |v| v.start,
        |k| format!(" vma {k:x}"),
        out,
    );
}

/// Every difference between two canonical snapshots.
pub fn diff(a: &Snapshot, b: &Snapshot) -> Vec<Mismatch> {
    let mut out = vec![];
    let ta: BTreeMap<i32, &Task> = a.tasks.iter().map(|t| (t.pid, t)).collect();
    let tb: BTreeMap<i32, &Task> = b.tasks.iter().map(|t| (t.pid, t)).collect();
    for (pid, t) in &ta {
        match tb.get(pid) {
            Some(u) => diff_task(t, u, &mut out),
            None => out.push(Mismatch {
                path: format!("task {pid}"),
                values: presence(true),
            }),
        }
    }
    for pid in tb.keys().filter(|p| !ta.contains_key(p)) {
        out.push(Mismatch {
            path: format!("task {pid}"),
            values: presence(false),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Fd, Task};

    #[test]
    fn finds_each_kind_of_difference() {
        let t = |pos| Task {
            pid: 5,
            comm: "a".into(),
            fds: vec![Fd {
                fd: 7,
                pos,
                ..Default::default()
            }],
            ..Default::default()
        };
        let a = Snapshot { tasks: vec![t(10)] };
        let mut b = Snapshot { tasks: vec![t(12)] };
        assert_eq!(
            diff(&a, &b),
            vec![Mismatch {
                path: "task 5 fd 7 pos".into(),
                values: vec![10.into(), 12.into()]
            }]
        );
        b.tasks[0].comm = "b".into();
        b.tasks[0].fds.clear();
        b.tasks.push(Task {
            pid: 6,
            ..Default::default()
        });
        let paths: Vec<String> = diff(&a, &b).into_iter().map(|m| m.path).collect();
        assert_eq!(paths, ["task 5 comm", "task 5 fd 7", "task 6"]);
        assert!(diff(&a, &a).is_empty());
    }

    #[test]
    fn detail_differences_are_named() {
        use crate::model::{SigAction, TaskDetail, ThreadDetail, NSIG};
        let d = TaskDetail {
            sigactions: vec![SigAction::default(); NSIG],
            threads: vec![ThreadDetail {
                tid: 5,
                ..Default::default()
            }],
            ..Default::default()
        };
        let task = |d: Option<TaskDetail>| Snapshot {
            tasks: vec![Task {
                pid: 5,
                detail: d,
                ..Default::default()
            }],
        };
        let mut e = d.clone();
        e.sigactions[1].handler = 0x1000;
        e.threads[0].blocked = 1;
        e.personality = 8;
        let paths: Vec<String> = diff(&task(Some(d.clone())), &task(Some(e)))
            .into_iter()
            .map(|m| m.path)
            .collect();
        assert_eq!(
            paths,
            [
                "task 5 detail personality",
                "task 5 detail signal 2 handler",
                "task 5 detail thread 5 blocked"
            ]
        );
        // Collected by one side only: a collector that could not fill it.
        let m = diff(&task(Some(d)), &task(None));
        assert_eq!(m.len(), 1);
        assert_eq!(
            (m[0].path.as_str(), m[0].values.clone()),
            ("task 5 detail", vec!["present".into(), "absent".into()])
        );
    }
}
