//! The chaos soak (issue 10): random spawns, deletes, worker kills, grandchild kills, hive
//! SIGKILL + restart and SIGTERM + restart under both shutdown policies, concurrent
//! operations and cancellations — and after every step, the invariants:
//!
//! - every listed live worker has that live pid, leading its own process group;
//! - every live process the hive started belongs to a listed live worker;
//! - a deleted worker's group is empty and its port can be bound;
//! - no process of the test's own is ever signalled (sentinels, one of them placed on a
//!   dead worker's recorded pid);
//! - every stream ends; ids are never reused; an acknowledged spawn is never forgotten and
//!   an acknowledged delete never comes back.
//!
//! About 60 s by default; `RBEE_CHAOS_SECS=600` soaks longer. The seed is printed first;
//! `RBEE_CHAOS_SEED=<n>` replays the same sequence of steps (timing differs, so a replay
//! explores the same neighbourhood rather than the exact interleaving).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rbee_hive_e2e::os::{
    Bystander, group_members, pid_alive, pids_with_env, port_free, signal_pid,
};
use rbee_hive_e2e::wait::{wait_for, wait_until_blocking, with_context};
use rbee_hive_e2e::{TestHive, demo_worker_type};
use serde_json::{Value, json};

const STREAM_DEADLINE: Duration = Duration::from_secs(60);
const SETTLE_DEADLINE: Duration = Duration::from_secs(60);
const MAX_LIVE_WORKERS: usize = 10;
const WORKER_TYPES: &[&str] = &[
    "demo",
    "family",
    "stubborn-family",
    "stubborn",
    "crashy",
    "slow",
    "phoenix",
];

fn worker_types() -> String {
    [
        demo_worker_type("family", &["--children", "2", "--heartbeat-ms", "0"], 10.0),
        demo_worker_type(
            "stubborn-family",
            &[
                "--children",
                "2",
                "--children-ignore-sigterm",
                "--heartbeat-ms",
                "0",
            ],
            10.0,
        ),
        demo_worker_type(
            "stubborn",
            &["--ignore-sigterm", "--heartbeat-ms", "0"],
            10.0,
        ),
        demo_worker_type(
            "crashy",
            &[
                "--exit-after-ms",
                "700",
                "--exit-code",
                "3",
                "--children",
                "1",
            ],
            10.0,
        ),
        demo_worker_type("slow", &["--start-delay-ms", "300"], 10.0),
        // Restarted after each crash, twice in a minute, then a crash loop.
        format!(
            "{}restart = \"on-failure\"\nmax_restarts = 2\nrestart_backoff_ms = 100\n",
            demo_worker_type(
                "phoenix",
                &[
                    "--exit-after-ms",
                    "500",
                    "--exit-code",
                    "3",
                    "--children",
                    "1",
                ],
                10.0,
            )
        ),
    ]
    .join("\n")
}

#[derive(Debug, Clone)]
enum Op {
    Spawn {
        worker: String,
    },
    Delete {
        id: String,
        grace_ms: u64,
        pid: u32,
        port: u16,
    },
}

impl Op {
    fn body(&self) -> Value {
        match self {
            Op::Spawn { worker } => json!({
                "operation": "worker_spawn", "hive_id": "localhost", "model": "chaos",
                "worker": worker, "device": 0,
            }),
            Op::Delete { id, grace_ms, .. } => json!({
                "operation": "worker_delete", "hive_id": "localhost", "id": id, "grace_ms": grace_ms,
            }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Done,
    Failed,
    Cancelled,
    /// The connection broke (the hive was killed) or the hive refused the job (shutting down).
    Cut,
}

#[derive(Debug)]
struct OpResult {
    op: Op,
    outcome: Outcome,
    lines: Vec<String>,
}

/// Submits `op`, optionally cancels it after `cancel_after`, and reads its stream to the end.
async fn run_op(
    client: reqwest::Client,
    addr: SocketAddr,
    op: Op,
    cancel_after: Option<Duration>,
) -> OpResult {
    use futures::StreamExt;
    let cut = |op: Op, lines: Vec<String>| OpResult {
        op,
        outcome: Outcome::Cut,
        lines,
    };
    let posted = client
        .post(format!("http://{addr}/v1/jobs"))
        .json(&op.body())
        .send()
        .await;
    let response = match posted {
        Ok(response) if response.status() == 200 => response,
        _ => return cut(op, Vec::new()),
    };
    let Ok(answer) = response.json::<Value>().await else {
        return cut(op, Vec::new());
    };
    let job_id = answer["job_id"].as_str().expect("job_id").to_owned();
    if let Some(delay) = cancel_after {
        let client = client.clone();
        let url = format!("http://{addr}/v1/jobs/{job_id}");
        tokio::spawn(async move {
            // The random moment of the cancellation is the chaos under test.
            tokio::time::sleep(delay).await;
            let _ = client.delete(url).send().await;
        });
    }
    let Ok(response) = client
        .get(format!("http://{addr}/v1/jobs/{job_id}/stream"))
        .send()
        .await
    else {
        return cut(op, Vec::new());
    };
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let read = async {
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(bytes) => text.push_str(&String::from_utf8_lossy(&bytes)),
                Err(_) => return false,
            }
        }
        true
    };
    let ended = tokio::time::timeout(STREAM_DEADLINE, read)
        .await
        .unwrap_or_else(|_| {
            panic!("the stream of {job_id} ({op:?}) did not end within {STREAM_DEADLINE:?}")
        });
    let complete = &text[..text.rfind("\n\n").map_or(0, |end| end + 2)];
    let lines = rbee_hive_e2e::sse::data_events(complete);
    if !ended || lines.last().map(String::as_str) != Some("[DONE]") {
        return cut(op, lines);
    }
    let outcome = if lines.iter().any(|l| l == "[CANCELLED]") {
        Outcome::Cancelled
    } else if lines.iter().any(|l| l.starts_with("[ERROR] ")) {
        Outcome::Failed
    } else {
        Outcome::Done
    };
    OpResult { op, outcome, lines }
}

/// Whether the worker's recorded pid should be running (a worker waiting for its restart is
/// `Starting` with the pid of its last run, which is gone).
fn is_live(worker: &Value) -> bool {
    matches!(
        worker["status"].as_str(),
        Some("Starting" | "Ready" | "Busy")
    ) && worker.get("restart_at").is_none()
}

fn is_settled(worker: &Value) -> bool {
    let stopping = worker["stop"].is_object() && worker["stop"]["finished_at"].is_null();
    worker["status"] != "Starting" && !stopping
}

fn stat_pgid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

struct Soak {
    hive: TestHive,
    rng: fastrand::Rng,
    keep_policy: bool,
    seen_ids: BTreeSet<String>,
    acked_live: BTreeSet<String>,
    acked_deleted: BTreeSet<String>,
    uncertain: BTreeSet<String>,
    sentinels: Vec<Bystander>,
    list: Vec<Value>,
    stats: Stats,
}

#[derive(Debug, Default)]
struct Stats {
    steps: usize,
    ops: usize,
    spawns_done: usize,
    deletes_done: usize,
    cancels: usize,
    hive_kills: usize,
    hive_sigterms: usize,
    keep_restarts: usize,
    worker_kills: usize,
    grandchild_kills: usize,
    pid_plants: usize,
}

impl Soak {
    fn log(&self, what: &str) {
        eprintln!("[chaos step {}] {what}", self.stats.steps);
    }

    async fn list_workers(&self) -> Vec<Value> {
        self.hive.workers().await
    }

    /// Picks random operations: spawns (while there is room) and deletes of listed workers.
    fn random_ops(&mut self) -> Vec<Op> {
        let count = self.rng.usize(1..=4);
        let live = self.list.iter().filter(|w| is_live(w)).count();
        (0..count)
            .map(|_| {
                let spawn = self.list.is_empty() || (live < MAX_LIVE_WORKERS && self.rng.bool());
                if spawn {
                    let worker = WORKER_TYPES[self.rng.usize(..WORKER_TYPES.len())].to_owned();
                    Op::Spawn { worker }
                } else {
                    let target = &self.list[self.rng.usize(..self.list.len())];
                    Op::Delete {
                        id: target["id"].as_str().unwrap().to_owned(),
                        grace_ms: [0, 50, 300, 1000][self.rng.usize(..4)],
                        pid: target["pid"].as_u64().unwrap() as u32,
                        port: target["port"].as_u64().unwrap() as u16,
                    }
                }
            })
            .collect()
    }

    fn launch(&mut self, ops: Vec<Op>) -> Vec<tokio::task::JoinHandle<OpResult>> {
        ops.into_iter()
            .map(|op| {
                let cancel =
                    (self.rng.u8(..) < 40).then(|| Duration::from_millis(self.rng.u64(0..30)));
                self.stats.cancels += usize::from(cancel.is_some());
                self.stats.ops += 1;
                tokio::spawn(run_op(self.hive.client.clone(), self.hive.addr, op, cancel))
            })
            .collect()
    }

    async fn collect(&mut self, handles: Vec<tokio::task::JoinHandle<OpResult>>) -> Vec<OpResult> {
        let mut results = Vec::new();
        for handle in handles {
            results.push(handle.await.expect("op task"));
        }
        for result in &results {
            self.account(result);
        }
        results
    }

    /// Checks what one operation says, and records what it acknowledged.
    fn account(&mut self, result: &OpResult) {
        match &result.op {
            Op::Spawn { .. } => {
                let id = result.lines.iter().find_map(|l| {
                    l.split("worker_spawn_process: Started ")
                        .nth(1)?
                        .split(':')
                        .next()
                        .map(str::to_owned)
                });
                if let Some(id) = &id {
                    assert!(
                        self.seen_ids.insert(id.clone()),
                        "id {id} was handed out twice: {:#?}",
                        result.lines
                    );
                }
                if result.outcome == Outcome::Done {
                    let id = id.expect("a ready spawn names its worker");
                    self.stats.spawns_done += 1;
                    self.acked_live.insert(id);
                }
            }
            Op::Delete { id, .. } => match result.outcome {
                Outcome::Done => {
                    self.stats.deletes_done += 1;
                    self.acked_live.remove(id);
                    self.uncertain.remove(id);
                    self.acked_deleted.insert(id.clone());
                }
                Outcome::Failed => {
                    let error = result
                        .lines
                        .iter()
                        .find(|l| l.starts_with("[ERROR] "))
                        .unwrap();
                    assert!(
                        error.ends_with(&format!("worker '{id}' not found")),
                        "a delete failed for another reason than a missing worker: {:#?}",
                        result.lines
                    );
                }
                Outcome::Cancelled | Outcome::Cut => {
                    self.uncertain.insert(id.clone());
                }
            },
        }
    }

    /// Checks right after a batch: every acknowledged delete left no process and freed the
    /// port (unless a listed worker of the same batch took it since).
    async fn check_deletes(&mut self, results: &[OpResult]) {
        let list = self.list_workers().await;
        for result in results {
            if let (Op::Delete { id, pid, port, .. }, Outcome::Done) = (&result.op, result.outcome)
            {
                assert!(
                    group_members(*pid).is_empty(),
                    "deleted {id} left processes of group {pid}: {:?}",
                    group_members(*pid)
                );
                let reused = list.iter().any(|w| is_live(w) && w["port"] == *port);
                assert!(
                    reused || port_free(*port),
                    "deleted {id} left port {port} in use"
                );
            }
        }
    }

    async fn settle(&mut self) {
        self.list = wait_for(
            with_context("the workers settle", || self.hive.log()),
            SETTLE_DEADLINE,
            || self.list_workers(),
            |list| list.iter().all(is_settled),
        )
        .await;
    }

    /// The invariants; transient states (a worker exiting on its own between two reads) get
    /// a few seconds to resolve, a real violation does not go away.
    async fn check(&mut self) {
        let (list, _) = wait_for(
            with_context(
                "every invariant holds (the last seen: problem, workers)",
                || self.hive.log(),
            ),
            Duration::from_secs(10),
            || async {
                let list = self.list_workers().await;
                let problem = self.violations(&list);
                (list, problem)
            },
            |(_, problem)| problem.is_none(),
        )
        .await;
        self.list = list;
    }

    fn violations(&self, list: &[Value]) -> Option<String> {
        let ids: Vec<&str> = list.iter().map(|w| w["id"].as_str().unwrap()).collect();
        let unique: BTreeSet<&str> = ids.iter().copied().collect();
        if unique.len() != ids.len() {
            return Some(format!("an id is listed twice: {ids:?}"));
        }
        if let Some(back) = ids.iter().find(|id| self.acked_deleted.contains(**id)) {
            return Some(format!(
                "{back} came back after its delete was acknowledged"
            ));
        }
        for id in self.acked_live.difference(&self.uncertain) {
            if !unique.contains(id.as_str()) {
                return Some(format!(
                    "{id} was acknowledged ready, never deleted, and is forgotten"
                ));
            }
        }
        let mut leaders = BTreeSet::new();
        for worker in list.iter().filter(|w| is_live(w)) {
            let id = &worker["id"];
            let pid = worker["pid"].as_u64().unwrap() as u32;
            if !pid_alive(pid) {
                return Some(format!(
                    "{id} is listed {} but pid {pid} is gone",
                    worker["status"]
                ));
            }
            if stat_pgid(pid) != Some(pid) {
                return Some(format!("{id}: pid {pid} does not lead its own group"));
            }
            if !pids_with_env("RBEE_TEST_TAG", &self.hive.tag).contains(&pid) {
                return Some(format!(
                    "{id}: pid {pid} is not a process this hive started"
                ));
            }
            leaders.insert(pid);
        }
        for pid in self.hive.tagged_processes() {
            match stat_pgid(pid) {
                Some(pgid) if leaders.contains(&pgid) => {}
                Some(pgid) if !pid_alive(pid) => {
                    let _ = pgid;
                }
                pgid => {
                    return Some(format!(
                        "process {pid} (group {pgid:?}) was started by the hive but belongs to no listed live worker"
                    ));
                }
            }
        }
        for sentinel in &self.sentinels {
            if !pid_alive(sentinel.pid()) {
                return Some(format!("sentinel {} was signalled", sentinel.pid()));
            }
        }
        None
    }

    fn write_policy(&mut self, keep: bool) {
        let path = self.hive.dir.path().join("hive.toml");
        let config = std::fs::read_to_string(&path).unwrap();
        let config: String = config
            .lines()
            .filter(|line| !line.starts_with("on_shutdown"))
            .map(|line| format!("{line}\n"))
            .collect();
        let policy = if keep { "keep" } else { "stop" };
        std::fs::write(&path, format!("on_shutdown = \"{policy}\"\n{config}")).unwrap();
        self.keep_policy = keep;
        self.stats.keep_restarts += usize::from(keep);
    }

    /// While the hive is down: a live worker's processes die, and its recorded pid is
    /// pointed at a sentinel of the test (as if the pid had been reused).
    fn plant_sentinel_on_dead_pid(&mut self) {
        let path = self.hive.state_dir().join("workers.json");
        // A hive killed right after it started may not have written its state file yet.
        let Ok(text) = std::fs::read_to_string(&path) else {
            return;
        };
        let mut state: Value = serde_json::from_str(&text).unwrap();
        let candidates: Vec<usize> = state["workers"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .filter(|(_, w)| {
                is_live(w) && w["pid"].as_u64().unwrap_or(0) > 0 && w["stop"].is_null()
            })
            .map(|(index, _)| index)
            .collect();
        if candidates.is_empty() {
            return;
        }
        let index = candidates[self.rng.usize(..candidates.len())];
        let pid = state["workers"][index]["pid"].as_u64().unwrap() as u32;
        // Killed again at each look: a member may fork between a look and its SIGKILL (a
        // `family` worker starts its children at any time), and its child must die too.
        let all_dead = wait_until_blocking(Duration::from_secs(10), || {
            let members = group_members(pid);
            for member in &members {
                signal_pid(*member, Signal::SIGKILL);
            }
            members.is_empty()
        });
        assert!(all_dead, "group {pid} did not die");
        let sentinel = Bystander::start();
        state["workers"][index]["pid"] = json!(sentinel.pid());
        state["workers"][index]["pgid"] = json!(sentinel.pid());
        std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
        self.log(&format!(
            "planted sentinel {} on the recorded pid of {}",
            sentinel.pid(),
            state["workers"][index]["id"]
        ));
        self.sentinels.push(sentinel);
        self.stats.pid_plants += 1;
    }

    async fn step(&mut self) {
        self.stats.steps += 1;
        let roll = self.rng.u8(..100);
        match roll {
            0..=49 => {
                let ops = self.random_ops();
                self.log(&format!("ops {ops:?}"));
                let handles = self.launch(ops);
                let results = self.collect(handles).await;
                self.check_deletes(&results).await;
            }
            50..=64 => {
                let ops = self.random_ops();
                let after = Duration::from_millis(self.rng.u64(0..40));
                self.log(&format!("ops {ops:?}, SIGKILL of the hive after {after:?}"));
                let handles = self.launch(ops);
                // The random moment of the kill is the chaos under test.
                tokio::time::sleep(after).await;
                self.hive.kill_hard();
                self.stats.hive_kills += 1;
                self.collect(handles).await;
                if self.rng.u8(..100) < 30 {
                    self.plant_sentinel_on_dead_pid();
                }
                let keep = self.rng.bool();
                self.write_policy(keep);
                self.hive.restart();
            }
            65..=76 => {
                let ops = self.random_ops();
                let after = Duration::from_millis(self.rng.u64(0..40));
                let policy = if self.keep_policy { "keep" } else { "stop" };
                self.log(&format!("ops {ops:?}, SIGTERM ({policy}) after {after:?}"));
                let handles = self.launch(ops);
                // The random moment of the signal is the chaos under test.
                tokio::time::sleep(after).await;
                self.hive.signal(Signal::SIGTERM);
                self.stats.hive_sigterms += 1;
                self.collect(handles).await;
                let status = self
                    .hive
                    .wait_exit(Duration::from_secs(60))
                    .unwrap_or_else(|| {
                        panic!("the hive did not exit after SIGTERM\n{}", self.hive.log())
                    });
                assert_eq!(status.code(), Some(0), "{}", self.hive.log());
                if !self.keep_policy {
                    // Every worker was stopped: none of the hive's processes is left.
                    let left = self.hive.tagged_processes();
                    assert!(left.is_empty(), "on_shutdown = stop left {left:?}");
                }
                let keep = self.rng.bool();
                self.write_policy(keep);
                self.hive.restart();
            }
            77..=86 => {
                let live: Vec<&Value> = self.list.iter().filter(|w| is_live(w)).collect();
                if let Some(worker) = live.get(self.rng.usize(..live.len().max(1))) {
                    let pid = worker["pid"].as_u64().unwrap() as u32;
                    self.log(&format!("SIGKILL of {}'s leader {pid}", worker["id"]));
                    signal_pid(pid, Signal::SIGKILL);
                    self.stats.worker_kills += 1;
                }
            }
            _ => {
                let families: Vec<u32> = self
                    .list
                    .iter()
                    .filter(|w| is_live(w))
                    .map(|w| w["pid"].as_u64().unwrap() as u32)
                    .filter(|pid| group_members(*pid).len() > 1)
                    .collect();
                if let Some(leader) = families.get(self.rng.usize(..families.len().max(1))) {
                    let children: Vec<u32> = group_members(*leader)
                        .into_iter()
                        .filter(|p| p != leader)
                        .collect();
                    if let Some(child) = children.first() {
                        self.log(&format!("SIGKILL of grandchild {child} of group {leader}"));
                        signal_pid(*child, Signal::SIGKILL);
                        self.stats.grandchild_kills += 1;
                    }
                }
            }
        }
        self.settle().await;
        self.check().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_soak_keeps_every_invariant() {
    let seconds: u64 = std::env::var("RBEE_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let seed: u64 = std::env::var("RBEE_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("chaos seed: {seed} (replay with RBEE_CHAOS_SEED={seed}); running {seconds} s");
    let hive = TestHive::builder()
        .config("stop_grace_ms = 300")
        .config(&worker_types())
        .start()
        .await;
    let mut soak = Soak {
        hive,
        rng: fastrand::Rng::with_seed(seed),
        keep_policy: false,
        seen_ids: BTreeSet::new(),
        acked_live: BTreeSet::new(),
        acked_deleted: BTreeSet::new(),
        uncertain: BTreeSet::new(),
        sentinels: vec![Bystander::start(), Bystander::start()],
        list: Vec::new(),
        stats: Stats::default(),
    };
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        soak.step().await;
    }
    // End under the stop policy, so that the fixture's shutdown leaves nothing behind.
    if soak.keep_policy {
        soak.hive.signal(Signal::SIGTERM);
        soak.hive
            .wait_exit(Duration::from_secs(60))
            .expect("the hive exits");
        soak.write_policy(false);
        soak.hive.restart();
        soak.settle().await;
        soak.check().await;
    }
    eprintln!(
        "chaos seed {seed}: {:?} in {:.0} s, {} ids handed out",
        soak.stats,
        started.elapsed().as_secs_f64(),
        soak.seen_ids.len()
    );
}
