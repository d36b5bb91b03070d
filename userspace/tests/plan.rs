//! The planner against the simulator: random reachable states (random
//! operation sequences the simulator accepted) must be planned, and every
//! plan must take the simulator from pid 1 to exactly the target.

use dumper::plan::{gen, plan, sim::Sim, validate};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Any operation sequence the simulator accepts leads to a state whose
    /// plan, when there is one, is proven; a failure shrinks to the
    /// shortest sequence that shows it.
    #[test]
    fn plans_of_reachable_states_are_proven(choices in proptest::collection::vec(any::<u64>(), 0..400)) {
        let (t, _) = gen::reachable_from(&choices);
        let t = validate(&t.to_file()).map_err(TestCaseError::fail)?;
        if let Ok(p) = plan(&t) {
            let end = Sim::run(&p.steps).map_err(|(i, e)| TestCaseError::fail(format!("step {i}: {e}")))?;
            end.matches(&t).map_err(TestCaseError::fail)?;
        }
    }
}

fn run(seeds: std::ops::Range<u64>, ops: usize) -> Vec<(u64, String)> {
    let mut failed = vec![];
    for seed in seeds {
        let (target, _) = gen::reachable(seed, ops);
        // The generator's states pass validation (they are reachable).
        let t = validate(&target.to_file()).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(t, target, "seed {seed}: JSON round trip");
        match plan(&t) {
            Ok(p) => {
                // The planner checks its own plans; check again here, from
                // the JSON a restore would read.
                let json = serde_json::to_string(&p.steps).unwrap();
                let steps: Vec<dumper::plan::Step> = serde_json::from_str(&json).unwrap();
                let end =
                    Sim::run(&steps).unwrap_or_else(|(i, e)| panic!("seed {seed}: step {i}: {e}"));
                end.matches(&t)
                    .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            }
            Err(e) => failed.push((seed, e)),
        }
    }
    failed
}

/// Every plan is proven. Not every reachable state is planned yet: at 400
/// operations about 1 in 2,500 is refused with the reason (at 800, about 1
/// in 400), in shapes that combine several of the planner's constructions
/// in ways it does not try. The rates are held so that they can only go
/// up: the seeds of the first three rows plan fully, the last row's seeds
/// were not looked at while the planner was written.
#[test]
fn random_reachable_states_are_planned_and_proven() {
    for (n, ops, floor) in [
        (0..3000u64, 60usize, 1.0),
        (0..1000, 200, 1.0),
        (0..1000, 400, 1.0),
        (20_000..20_500, 800, 0.995),
    ] {
        let failed = run(n.clone(), ops);
        let n = n.end - n.start;
        for (s, e) in failed.iter().take(8) {
            eprintln!("{ops} ops, seed {s}: {e}");
        }
        let rate = 1.0 - failed.len() as f64 / n as f64;
        eprintln!(
            "{ops} ops: {} of {n} reachable states planned ({:.2}%)",
            n as usize - failed.len(),
            100.0 * rate
        );
        assert!(
            rate >= floor,
            "{ops} ops: only {:.2}% planned",
            100.0 * rate
        );
    }
}

/// `PLAN_SEED=N [PLAN_OPS=M] cargo test -p dumper --test plan show_seed --
/// --nocapture` prints a generated state (M operations, default 60), the
/// steps that made it and the planner's answer.
#[test]
fn show_seed() {
    let Some(seed) = std::env::var("PLAN_SEED").ok().and_then(|s| s.parse().ok()) else {
        return;
    };
    let ops = std::env::var("PLAN_OPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let (t, steps) = gen::reachable(seed, ops);
    for s in &steps {
        eprintln!("  {s}");
    }
    for p in t.procs.values() {
        eprintln!("{p:?} table {:?}", t.table_of(p.pid));
    }
    match plan(&t) {
        Ok(p) => p.steps.iter().for_each(|s| eprintln!("plan: {s}")),
        Err(e) => eprintln!("{e}"),
    }
}

fn tree(procs: &[(i32, i32, i32, i32, &str)], extra: &str) -> String {
    let ps: Vec<String> = procs
        .iter()
        .map(|(pid, ppid, pgid, sid, st)| {
            let (state, sub) = match *st {
                "z" => ("zombie", false),
                "s" => ("alive", true),
                _ => ("alive", false),
            };
            format!(r#"{{"pid":{pid},"ppid":{ppid},"pgid":{pgid},"sid":{sid},"state":"{state}","subreaper":{sub}}}"#)
        })
        .collect();
    format!(r#"{{"processes":[{}]{extra}}}"#, ps.join(","))
}

fn plans(name: &str, json: &str) {
    let t = dumper::plan::target_from_json(json).unwrap_or_else(|e| panic!("{name}: {e}"));
    let p = plan(&t).unwrap_or_else(|e| panic!("{name}: {e}"));
    let end = Sim::run(&p.steps).unwrap_or_else(|(i, e)| panic!("{name}: step {i}: {e}"));
    end.matches(&t).unwrap_or_else(|e| panic!("{name}: {e}"));
}

/// The shapes known to be hard, by hand.
#[test]
fn hard_shapes_are_planned() {
    plans(
        "a dead session leader whose members sit in different branches",
        &tree(
            &[
                (1, 0, 1, 1, "a"),
                (10, 1, 10, 5, "a"),
                (20, 1, 10, 5, "a"),
                (21, 20, 21, 5, "a"),
                (22, 21, 21, 5, "a"),
            ],
            "",
        ),
    );
    plans(
        "a zombie group leader with live members",
        &tree(
            &[
                (1, 0, 1, 1, "a"),
                (11, 1, 11, 1, "z"),
                (12, 1, 11, 1, "a"),
                (13, 12, 11, 1, "a"),
            ],
            "",
        ),
    );
    plans(
        "a group leader that moved to another group",
        &tree(
            &[
                (1, 0, 1, 1, "a"),
                (30, 1, 1, 1, "a"),
                (31, 30, 30, 1, "a"),
                (32, 1, 30, 1, "a"),
            ],
            "",
        ),
    );
    plans(
        "orphans of a dead session leader, reparented to a subreaper",
        &tree(
            &[
                (1, 0, 1, 1, "a"),
                (40, 1, 40, 40, "s"),
                (42, 40, 42, 41, "a"),
                (43, 40, 42, 41, "a"),
                (44, 43, 44, 41, "a"),
            ],
            "",
        ),
    );
    plans(
        "an orphan of a live session leader that now has another parent",
        &tree(
            &[
                (1, 0, 1, 1, "a"),
                (61, 1, 1, 1, "a"),
                (60, 61, 60, 60, "a"),
                (62, 1, 60, 60, "a"),
            ],
            "",
        ),
    );
    plans(
        "a zombie session leader whose member went to init",
        &tree(
            &[
                (1, 0, 1, 1, "a"),
                (70, 1, 1, 1, "a"),
                (71, 70, 71, 71, "z"),
                (72, 1, 71, 71, "a"),
            ],
            "",
        ),
    );
    plans(
        "processes sharing an fd table across sessions",
        &tree(
            &[
                (1, 0, 1, 1, "a"),
                (50, 1, 1, 1, "a"),
                (51, 1, 51, 51, "a"),
                (52, 51, 52, 51, "a"),
            ],
            r#","files":[{"id":"p","kind":"pipe","end":"r","peer":"q"},{"id":"q","kind":"pipe","end":"w","peer":"p"},{"id":"s1","kind":"socket","peer":"s2"},{"id":"s2","kind":"socket","peer":"s1"}],
               "fds":{"50":{"0":"p","1":"q","7":"s1"},"51":{"0":"p","1":"q","7":"s1"},"52":{"3":"s2","4":"q"}},"fd_tables":[[50,51]]"#,
        ),
    );
    plans(
        "a zombie session leader that carried an fd table into its session",
        &tree(
            &[
                (1, 0, 1, 1, "a"),
                (6, 1, 6, 6, "a"),
                (10, 6, 10, 10, "z"),
                (13, 1, 1, 1, "a"),
                (26, 6, 10, 10, "a"),
            ],
            r#","fd_tables":[[13,26]]"#,
        ),
    );
    plans(
        "a dead session leader's table shared with a process of another session",
        &tree(
            &[
                (1, 0, 1, 1, "a"),
                (16, 1, 1, 1, "a"),
                (29, 1, 14, 14, "a"),
                (55, 1, 14, 14, "a"),
            ],
            r#","fd_tables":[[16,55]]"#,
        ),
    );
    plans(
        "two group leaders, each in the other's group",
        &tree(
            &[
                (1, 0, 1, 1, "a"),
                (5, 1, 8, 1, "a"),
                (8, 1, 5, 1, "a"),
                (11, 5, 5, 1, "a"),
            ],
            "",
        ),
    );
}

#[test]
fn impossible_targets_are_refused_with_the_reason() {
    let refused = |json: &str, want: &str| {
        let e = dumper::plan::target_from_json(json)
            .and_then(|t| plan(&t).map(|_| ()))
            .unwrap_err();
        assert!(e.contains(want), "{e:?} does not say {want:?}");
        assert_eq!(e.lines().count(), 1, "{e}");
    };
    let p1 = (1, 0, 1, 1, "a");
    refused(
        &tree(&[p1, (5, 1, 5, 5, "a"), (6, 1, 5, 1, "a")], ""),
        "process group 5 spans two sessions",
    );
    refused(
        &tree(&[p1, (5, 1, 1, 1, "a"), (6, 1, 6, 5, "a")], ""),
        "process 5 has the pid of session 5 but is not its leader",
    );
    refused(
        &tree(&[p1, (5, 1, 1, 1, "a"), (5, 1, 1, 1, "a")], ""),
        "pid 5 is used twice",
    );
    refused(&tree(&[(2, 0, 2, 2, "a")], ""), "pid 1 is missing");
    refused(
        &tree(&[p1, (5, 1, 1, 1, "z"), (6, 5, 1, 1, "a")], ""),
        "parent 5 is a zombie",
    );
    refused(
        &tree(&[p1], r#","fds":{"1":{"0":"nope"}}"#),
        "names unknown file nope",
    );
    refused(
        &tree(
            &[p1],
            r#","files":[{"id":"r","kind":"pipe","end":"r","peer":"w"}],"fds":{"1":{"0":"r"}}"#,
        ),
        "its peer w is not in files",
    );
    refused(
        &tree(
            &[p1, (5, 1, 7, 5, "a"), (7, 5, 7, 5, "a"), (8, 1, 8, 8, "a")],
            "",
        ),
        "leads session 5 but not its own process group",
    );
    // A group whose leader is gone is fine (a helper stands in).
    plans("a dead group leader", &tree(&[p1, (5, 1, 6, 1, "a")], ""));
}

/// How the planner scales (the criterion benchmark measures it properly):
/// printed, not asserted.
#[test]
fn scale_report() {
    if std::env::var_os("PLAN_SCALE").is_none() {
        return;
    }
    for n in [1000usize, 2000, 4000, 10000] {
        let t = gen::large(n, 9, 1);
        let t0 = std::time::Instant::now();
        let p = plan(&t).unwrap();
        eprintln!(
            "{n} processes, {} fds: {:?}, {} steps, {} helpers",
            n * 10,
            t0.elapsed(),
            p.steps.len(),
            p.helpers.len()
        );
    }
}

/// `PLAN_FAILS=OPS cargo test ... list_failures -- --nocapture`: the seeds
/// the planner refuses, with the reason (for working on the planner).
#[test]
fn list_failures() {
    let Some(ops) = std::env::var("PLAN_FAILS")
        .ok()
        .and_then(|s| s.parse().ok())
    else {
        return;
    };
    // PLAN_SEEDS=a..b: another range of seeds.
    let seeds = std::env::var("PLAN_SEEDS")
        .ok()
        .and_then(|s| {
            let (a, b) = s.split_once("..")?;
            Some(a.parse().ok()?..b.parse().ok()?)
        })
        .unwrap_or(0..1000);
    for (s, e) in run(seeds, ops) {
        eprintln!("FAIL {s}: {e}");
    }
}
