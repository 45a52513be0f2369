//! [`TestHive`]: a real `rbee-hive` process for one test.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tempfile::TempDir;

use crate::binaries;
use crate::openmetrics;
use crate::os;
use crate::sse;
use crate::wait;

/// How long a stream may take before a test calls it hung.
pub const STREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// Options for starting a [`TestHive`].
#[derive(Debug, Default, Clone)]
pub struct HiveBuilder {
    config: Vec<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    token: Option<String>,
    nvidia_smi: Option<NvidiaSmi>,
    nvml_library: Option<String>,
    inherited: Option<std::sync::Arc<std::net::TcpListener>>,
    no_config_flag: bool,
    nofile_limit: Option<u64>,
    hive_id: Option<String>,
    port: Option<u16>,
}

/// What the hive uses as `nvidia-smi`.
#[derive(Debug, Clone)]
enum NvidiaSmi {
    /// A program at this path.
    Program(String),
    /// A script printing the captured H100 line for this many GPUs.
    Gpus(usize),
}

impl HiveBuilder {
    /// Adds lines to the hive's config file.
    pub fn config(mut self, toml: &str) -> Self {
        self.config.push(toml.to_owned());
        self
    }

    /// Adds command-line arguments.
    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    /// Gives the hive an id of its own (`--hive-id`): it then refuses jobs for another, and
    /// the fixtures' own jobs ([`TestHive::worker`], …) name it.
    pub fn hive_id(mut self, id: &str) -> Self {
        self.hive_id = Some(id.to_owned());
        self.arg("--hive-id").arg(id)
    }

    /// Listens on this port (and again on it after [`TestHive::restart`]) instead of a free
    /// one picked at each start.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Sets an environment variable for the hive.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Makes the hive see `count` GPUs: its `nvidia-smi` is a script that prints the real
    /// H100 capture (`crates/devices/fixtures/nvidia-smi/`) once per GPU, indices 0, 1, ….
    /// Without this (or [`nvidia_smi`](Self::nvidia_smi)) the hive sees no GPU, whatever
    /// the machine has, so tests hold on GPU machines too.
    pub fn gpus(mut self, count: usize) -> Self {
        self.nvidia_smi = Some(NvidiaSmi::Gpus(count));
        self
    }

    /// Uses `program` as the hive's `nvidia-smi`.
    pub fn nvidia_smi(mut self, program: &str) -> Self {
        self.nvidia_smi = Some(NvidiaSmi::Program(program.to_owned()));
        self
    }

    /// Uses `library` as the hive's NVML library. Without this the hive is given a path
    /// where there is none, so it samples GPUs through its `nvidia-smi` (or not at all),
    /// whatever driver the machine has.
    pub fn nvml_library(mut self, library: &str) -> Self {
        self.nvml_library = Some(library.to_owned());
        self
    }

    /// Passes `listener` to the hive as a service manager would (socket activation: fd 3,
    /// `LISTEN_FDS=1`, `LISTEN_PID`), at each start and restart; the test keeps its copy, so
    /// connections wait in its backlog while no hive runs.
    pub fn inherit_listener(mut self, listener: std::sync::Arc<std::net::TcpListener>) -> Self {
        self.inherited = Some(listener);
        self
    }

    /// Starts the hive with soft and hard `RLIMIT_NOFILE` at `limit` (as `prlimit
    /// --nofile=<limit>` would).
    pub fn nofile_limit(mut self, limit: u64) -> Self {
        self.nofile_limit = Some(limit);
        self
    }

    /// Starts the hive without `--config` (its config file is still written), as the
    /// upstream queen starts one.
    pub fn without_config_flag(mut self) -> Self {
        self.no_config_flag = true;
        self
    }

    /// Requires this bearer token (written to a token file); the fixture's client sends it.
    pub fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    /// Starts the hive and waits until it listens.
    pub async fn start(self) -> TestHive {
        TestHive::start_with(self)
    }
}

/// A running `rbee-hive` process, stopped and checked on `Drop`.
pub struct TestHive {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its temporary directory (config, state dir, logs).
    pub dir: TempDir,
    /// The unique tag in the environment of every process it starts.
    pub tag: String,
    /// A client that sends the token, if any.
    pub client: reqwest::Client,
    token: Option<String>,
    options: HiveBuilder,
}

impl TestHive {
    /// Its catalog folder (`<dir>/catalog`).
    pub fn catalog_dir(&self) -> PathBuf {
        self.dir.path().join("catalog")
    }

    /// Puts a `CpuLlm` worker-binary entry `id` into the catalog as the upstream hive lays
    /// it out (`workers/<id>/metadata.json`), its program a copy of the demo worker named
    /// `program`; returns the program's path.
    pub fn install_worker_binary(&self, id: &str, program: &str) -> PathBuf {
        let folder = self.catalog_dir().join("workers").join(id);
        std::fs::create_dir_all(&folder).expect("entry folder");
        let binary = folder.join(program);
        std::fs::copy(binaries::program("rbee-demo-worker"), &binary).expect("copy program");
        let size = std::fs::metadata(&binary).expect("program").len();
        let metadata = serde_json::json!({
            "artifact": {"id": id, "worker_type": "CpuLlm", "platform": "Linux",
                         "path": binary, "size": size, "status": "Available",
                         "version": "0.1.0", "added_at": "2025-01-01T00:00:00Z"},
            "added_at": "2025-01-01T00:00:00Z", "last_accessed": "2025-01-01T00:00:00Z"
        });
        std::fs::write(folder.join("metadata.json"), metadata.to_string()).expect("metadata");
        binary
    }

    /// A hive with default settings.
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    /// A hive with these lines in its config file (settings, worker types), and otherwise
    /// default settings.
    pub async fn with_config(lines: &[&str]) -> Self {
        lines
            .iter()
            .fold(Self::builder(), |builder, line| builder.config(line))
            .start()
            .await
    }

    /// Options for a hive.
    pub fn builder() -> HiveBuilder {
        HiveBuilder::default()
    }

    fn start_with(options: HiveBuilder) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("rbee-hive-test-")
            .tempdir()
            .expect("temp dir");
        let tag = format!(
            "{}-{}",
            std::process::id(),
            dir.path().file_name().unwrap().to_string_lossy()
        );
        // Each test hive gets its own block of worker ports, so parallel tests do not race
        // for the same ones (the hive would cope, but a test could see a bind failure).
        let block = worker_port_block(&tag);
        let mut config = format!("worker_ports = \"{}-{}\"\n", block.0, block.1);
        let nvidia_smi = match &options.nvidia_smi {
            Some(NvidiaSmi::Program(program)) => program.clone(),
            Some(NvidiaSmi::Gpus(count)) => fake_nvidia_smi(dir.path(), *count),
            None => dir.path().join("no-nvidia-smi").display().to_string(),
        };
        config.push_str(&format!("nvidia_smi = {nvidia_smi:?}\n"));
        let nvml_library = match &options.nvml_library {
            Some(library) => library.clone(),
            None => dir
                .path()
                .join("no-libnvidia-ml.so.1")
                .display()
                .to_string(),
        };
        config.push_str(&format!("nvml_library = {nvml_library:?}\n"));
        // Never the user's ~/.cache/rbee: each test hive has a catalog of its own.
        config.push_str(&format!(
            "catalog_dir = {:?}\n",
            dir.path().join("catalog").display().to_string()
        ));
        config.push_str(&options.config.join("\n"));
        std::fs::write(dir.path().join("hive.toml"), config).expect("write config");
        if let Some(token) = &options.token {
            std::fs::write(dir.path().join("token"), token).expect("write token");
        }
        let (child, addr) = launch(&options, dir.path(), &tag)
            .unwrap_or_else(|log| panic!("rbee-hive did not start:\n{log}"));
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = &options.token {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {token}").parse().expect("header value"),
            );
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .expect("client");
        Self {
            child: Some(child),
            addr,
            dir,
            tag,
            client,
            token: options.token.clone(),
            options,
        }
    }

    /// A hive with one ready demo worker, then SIGKILLed (a crash): the worker runs on, in
    /// its own process group, and [`restart`](Self::restart) starts the next hive. Returns
    /// the hive and the worker's record.
    pub async fn killed_with_a_worker() -> (Self, Value) {
        let mut hive = Self::start().await;
        let worker = hive.spawn_ready("demo").await;
        hive.kill_hard();
        (hive, worker)
    }

    /// Starts another hive process on this one's state dir and config (after this one was
    /// stopped or killed); it listens on a new port.
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "stop or kill the hive before restarting it"
        );
        let (child, addr) = launch(&self.options, self.dir.path(), &self.tag)
            .unwrap_or_else(|log| panic!("rbee-hive did not restart:\n{log}"));
        self.child = Some(child);
        self.addr = addr;
    }

    /// Tries to start a second hive on this one's state dir; returns its exit status and log
    /// if it did not start, or kills it and panics if it did.
    pub fn start_second_on_same_state_dir(&self) -> String {
        match launch(&self.options, self.dir.path(), &self.tag) {
            Ok((mut child, addr)) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("a second hive started on the same state dir ({addr})");
            }
            Err(log) => log,
        }
    }

    /// SIGKILLs the hive (a crash): its workers keep running, in their own process groups.
    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Makes the fixture's client send `token` from now on (after the hive's token file
    /// changed and it was reloaded).
    pub fn set_token(&mut self, token: &str) {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("header value"),
        );
        self.client = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .expect("client");
        self.token = Some(token.to_owned());
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The hive's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("hive running")
    }

    /// The hive's state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The bearer token this hive requires, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// What the hive wrote to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("hive.stderr")).unwrap_or_default()
    }

    /// Posts a JSON body to `/v1/jobs` and returns the status and the JSON answer.
    pub async fn post_job(&self, body: &Value) -> (StatusCode, Value) {
        let response = self
            .client
            .post(self.url("/v1/jobs"))
            .json(body)
            .send()
            .await
            .expect("POST /v1/jobs");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Submits an operation that must be accepted; returns the job id.
    pub async fn submit(&self, body: Value) -> String {
        let (status, answer) = self.post_job(&body).await;
        assert_eq!(status, StatusCode::OK, "POST {body} answered {answer}");
        let job_id = answer["job_id"].as_str().expect("job_id").to_owned();
        assert_eq!(answer["sse_url"], format!("/v1/jobs/{job_id}/stream"));
        job_id
    }

    /// Reads a job's whole default-format stream (fails the test if it does not end).
    pub async fn stream_body(&self, job_id: &str) -> String {
        let response = self.get(&format!("/v1/jobs/{job_id}/stream")).await;
        assert_eq!(response.status(), StatusCode::OK, "stream of {job_id}");
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        tokio::time::timeout(STREAM_TIMEOUT, response.text())
            .await
            .unwrap_or_else(|_| panic!("stream of {job_id} did not end within {STREAM_TIMEOUT:?}"))
            .expect("stream body")
    }

    /// Reads a job's default-format stream until an event's data satisfies `until`; returns
    /// the events' data so far (the job goes on). Fails the test if the stream ends first
    /// or nothing matches within [`STREAM_TIMEOUT`].
    pub async fn stream_until(&self, job_id: &str, until: impl Fn(&str) -> bool) -> Vec<String> {
        use futures::StreamExt;
        let response = self.get(&format!("/v1/jobs/{job_id}/stream")).await;
        assert_eq!(response.status(), StatusCode::OK, "stream of {job_id}");
        let mut body = response.bytes_stream();
        let mut text = String::new();
        let read = async {
            while let Some(chunk) = body.next().await {
                text.push_str(&String::from_utf8_lossy(&chunk.expect("stream chunk")));
                let complete = &text[..text.rfind("\n\n").map_or(0, |end| end + 2)];
                let lines = sse::data_events(complete);
                if lines.iter().any(|line| until(line)) {
                    return lines;
                }
            }
            panic!("the stream of {job_id} ended before the expected line: {text}");
        };
        tokio::time::timeout(STREAM_TIMEOUT, read)
            .await
            .unwrap_or_else(|_| {
                panic!("no expected line in the stream of {job_id} within {STREAM_TIMEOUT:?}")
            })
    }

    /// Reads a job's stream and returns its events' data (one string per event).
    pub async fn stream_lines(&self, job_id: &str) -> Vec<String> {
        sse::data_events(&self.stream_body(job_id).await)
    }

    /// Submits an operation and reads its whole stream.
    pub async fn run_job(&self, body: Value) -> Vec<String> {
        let job_id = self.submit(body).await;
        self.stream_lines(&job_id).await
    }

    /// Reads a job's whole `?format=json` stream.
    pub async fn stream_json(&self, job_id: &str) -> Vec<sse::Event> {
        let response = self
            .get(&format!("/v1/jobs/{job_id}/stream?format=json"))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let body = tokio::time::timeout(STREAM_TIMEOUT, response.text())
            .await
            .unwrap_or_else(|_| panic!("stream of {job_id} did not end within {STREAM_TIMEOUT:?}"))
            .expect("stream body");
        sse::events(&body)
    }

    /// Runs an operation and returns its result object (`event: result`), if it had one.
    pub async fn job_result(&self, body: Value) -> Option<Value> {
        let job_id = self.submit(body).await;
        self.stream_json(&job_id)
            .await
            .into_iter()
            .find(|e| e.event.as_deref() == Some("result"))
            .map(|e| serde_json::from_str(&e.data).expect("result JSON"))
    }

    /// The id its jobs name: the one given with [`HiveBuilder::hive_id`], else `localhost`.
    pub fn id(&self) -> &str {
        self.options.hive_id.as_deref().unwrap_or("localhost")
    }

    /// The registered workers (the result of `worker_list`).
    pub async fn workers(&self) -> Vec<Value> {
        let result = self
            .job_result(serde_json::json!({"operation": "worker_list", "hive_id": self.id()}))
            .await;
        result.expect("worker_list result")["workers"]
            .as_array()
            .expect("workers")
            .clone()
    }

    /// One worker's record, if it is registered.
    pub async fn worker(&self, id: &str) -> Option<Value> {
        self.job_result(
            serde_json::json!({"operation": "worker_get", "hive_id": self.id(), "id": id}),
        )
        .await
    }

    /// Waits until worker `id`'s record satisfies `check` (or fails after `timeout`).
    pub async fn wait_for_worker(
        &self,
        id: &str,
        timeout: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        wait::wait_for(
            &format!("worker {id} reaches the expected state"),
            timeout,
            || async { self.worker(id).await.unwrap_or(Value::Null) },
            check,
        )
        .await
    }

    /// Submits a spawn of `worker_type` (one slow to start) and waits until its worker `id`
    /// is `Starting`; returns the spawn's job id and that record.
    pub async fn spawn_starting(&self, worker_type: &str, id: &str) -> (String, Value) {
        let job_id = self.submit(spawn_body(worker_type)).await;
        let starting = self
            .wait_for_worker(id, Duration::from_secs(10), |r| r["status"] == "Starting")
            .await;
        (job_id, starting)
    }

    /// Waits until process `pid` is gone and no worker is listed any more: a stop that goes
    /// on after its job ended; `what` says which.
    pub async fn wait_until_all_gone(&self, pid: u32, what: &str) {
        wait::wait_for(
            what,
            Duration::from_secs(10),
            || async { (os::pid_alive(pid), self.workers().await) },
            |(alive, workers)| !alive && workers.is_empty(),
        )
        .await;
    }

    /// Deletes worker `id` with the default grace; returns its job's lines.
    pub async fn delete_worker(&self, id: &str) -> Vec<String> {
        self.run_job(delete_body(id, None)).await
    }

    /// Spawns a worker of `worker_type` that must become ready; returns its record.
    pub async fn spawn_ready(&self, worker_type: &str) -> Value {
        self.spawn_ready_with(spawn_body(worker_type)).await
    }

    /// Runs the spawn of `body` (a `worker_spawn` operation), which must end with a ready
    /// worker; returns its record.
    pub async fn spawn_ready_with(&self, body: Value) -> Value {
        let lines = self.run_job(body).await;
        assert_eq!(
            lines.last().map(String::as_str),
            Some("[DONE]"),
            "{lines:#?}"
        );
        let ready = lines
            .iter()
            .find(|l| l.contains("worker_spawn_ready"))
            .unwrap_or_else(|| panic!("{lines:#?}"));
        let id = ready
            .split("Worker ready: ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .expect("worker id");
        self.worker(id).await.expect("spawned worker is registered")
    }

    /// `GET /v1/jobs/{id}` as JSON.
    pub async fn job_status(&self, job_id: &str) -> (StatusCode, Value) {
        let response = self.get(&format!("/v1/jobs/{job_id}")).await;
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// `DELETE /v1/jobs/{id}`: cancels a job; the hive's answer.
    pub async fn cancel(&self, job_id: &str) -> reqwest::Response {
        self.client
            .delete(self.url(&format!("/v1/jobs/{job_id}")))
            .send()
            .await
            .expect("DELETE job")
    }

    /// `GET <path>` with the fixture's client; the response, whatever its status.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// `GET <path>`: the body as JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        self.get(path)
            .await
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: not JSON: {e}"))
    }

    /// `GET <path>`: the body as text.
    pub async fn get_text(&self, path: &str) -> String {
        self.get(path)
            .await
            .text()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// The samples of `GET /metrics`, parsed ([`openmetrics::samples`]).
    pub async fn metrics(&self) -> Vec<Value> {
        openmetrics::samples(&self.get_text("/metrics").await)
    }

    /// How many jobs the hive keeps (from `GET /v1/jobs`).
    pub async fn job_count(&self) -> usize {
        let response = self.get("/v1/jobs").await;
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = response.json().await.expect("jobs JSON");
        body["jobs"].as_array().expect("jobs array").len()
    }

    /// Sends `signal` to the hive process.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        os::signal_pid(self.pid(), signal);
    }

    /// Waits for the hive to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let mut status = None;
        wait::wait_until_blocking(timeout, || {
            status = child.try_wait().expect("try_wait");
            status.is_some()
        });
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// The state file as JSON.
    pub fn state_file(&self) -> Value {
        let text =
            std::fs::read_to_string(self.state_dir().join("workers.json")).expect("state file");
        serde_json::from_str(&text).expect("state file is JSON")
    }

    /// The ids of the workers in the state file.
    pub fn saved_worker_ids(&self) -> Vec<String> {
        self.state_file()["workers"]
            .as_array()
            .expect("workers")
            .iter()
            .map(|w| w["id"].as_str().expect("id").to_owned())
            .collect()
    }

    /// The `rbee-hive` client, pointed at this hive (`RBEE_HIVE_URL`, and the token file
    /// when the hive has a token); add the subcommand and its arguments.
    pub fn cli(&self) -> Command {
        let mut command = Command::new(binaries::program("rbee-hive"));
        command
            .env("RBEE_HIVE_URL", format!("http://{}", self.addr))
            .env_remove("RBEE_HIVE_HIVE_ID")
            .env_remove("RBEE_HIVE_TOKEN_FILE")
            .stdin(Stdio::null());
        if self.token.is_some() {
            command.env("RBEE_HIVE_TOKEN_FILE", self.dir.path().join("token"));
        }
        command
    }

    /// Processes (other than the hive) that carry this hive's tag.
    pub fn tagged_processes(&self) -> Vec<u32> {
        let hive = self.child.as_ref().map(Child::id);
        os::pids_with_env("RBEE_TEST_TAG", &self.tag)
            .into_iter()
            .filter(|pid| Some(*pid) != hive)
            .collect()
    }
}

/// Starts `rbee-hive` on `dir`'s config and state dir and waits for its address line;
/// `Err(log)` if it exits or stays silent.
fn launch(
    options: &HiveBuilder,
    dir: &std::path::Path,
    tag: &str,
) -> Result<(Child, SocketAddr), String> {
    let program = binaries::program("rbee-hive");
    let stderr_path = dir.join("hive.stderr");
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&stderr_path)
        .expect("stderr file");
    // Socket activation: the Python prelude below (dash's redirections stop at fd 9) puts
    // the listener at fd 3 and names its own pid, which the hive keeps (`exec`), in
    // LISTEN_PID, as systemd does after its fork.
    let inherited_fd = options.inherited.as_ref().map(|listener| {
        let copy = nix::unistd::dup(listener.as_ref()).expect("dup the listener");
        nix::fcntl::fcntl(
            &copy,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )
        .expect("an inheritable copy");
        copy
    });
    // A small Python program (python3 is on every CI machine) prepares what the hive is to
    // inherit, then becomes the hive (`exec`).
    let mut prelude = String::new();
    if let Some(fd) = &inherited_fd {
        let raw = std::os::fd::AsRawFd::as_raw_fd(fd);
        prelude.push_str(&format!(
            "os.dup2({raw}, 3)\n\
             os.close({raw})\n\
             os.environ['LISTEN_PID'] = str(os.getpid())\n\
             os.environ['LISTEN_FDS'] = '1'\n"
        ));
    }
    if let Some(limit) = options.nofile_limit {
        // As `prlimit --nofile=N`: soft and hard, so the hive cannot raise it.
        prelude.push_str(&format!(
            "import resource\nresource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit}))\n"
        ));
    }
    let mut command = match prelude.is_empty() {
        false => {
            let mut python = Command::new("python3");
            python.arg("-c").arg(format!(
                "import os, sys\n{prelude}os.execv(sys.argv[1], sys.argv[1:])\n"
            ));
            python.arg(&program);
            python
        }
        true => Command::new(&program),
    };
    command
        .arg("--port")
        .arg(options.port.unwrap_or(0).to_string());
    if !options.no_config_flag {
        command.arg("--config").arg(dir.join("hive.toml"));
    }
    command
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(&options.args)
        .env("RBEE_TEST_TAG", tag)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    for key in [
        "RBEE_HIVE_PORT",
        "RBEE_HIVE_BIND",
        "RBEE_HIVE_HIVE_ID",
        "RBEE_HIVE_TOKEN_FILE",
        "RBEE_HIVE_CONFIG",
        "RBEE_HIVE_CATALOG_DIR",
        "HF_ENDPOINT",
        "HF_TOKEN",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
    ] {
        command.env_remove(key);
    }
    if options.token.is_some() {
        command.arg("--token-file").arg(dir.join("token"));
    }
    for (key, value) in &options.env {
        command.env(key, value);
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
    // The child has its copy; this one must not reach other children.
    drop(inherited_fd);
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(line) if !line.is_empty() => line,
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::fs::read_to_string(&stderr_path).unwrap_or_default());
        }
    };
    let addr = line
        .trim()
        .rsplit("http://")
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    Ok((child, addr))
}

/// Writes an `nvidia-smi` that prints the captured H100 line once per GPU; returns its path.
fn fake_nvidia_smi(dir: &std::path::Path, count: usize) -> String {
    let capture =
        include_str!("../../crates/devices/fixtures/nvidia-smi/query-gpu-noheader-nounits.csv");
    let (_, rest) = capture
        .trim()
        .split_once(',')
        .expect("the capture starts with the GPU index");
    let lines: String = (0..count)
        .map(|index| format!("{index},{rest}\n"))
        .collect();
    let path = dir.join("nvidia-smi");
    std::fs::write(&path, format!("#!/bin/sh\ncat <<'EOF'\n{lines}EOF\n"))
        .expect("write nvidia-smi");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod nvidia-smi");
    path.display().to_string()
}

/// The `worker_delete` body for worker `id`, with the default grace or `grace_ms`.
pub fn delete_body(id: &str, grace_ms: Option<u64>) -> Value {
    let mut body =
        serde_json::json!({"operation": "worker_delete", "hive_id": "localhost", "id": id});
    if let Some(ms) = grace_ms {
        body["grace_ms"] = serde_json::json!(ms);
    }
    body
}

/// A worker record's `pid`.
pub fn pid_of(record: &Value) -> u32 {
    record["pid"].as_u64().expect("pid") as u32
}

/// A worker record's `port`.
pub fn port_of(record: &Value) -> u16 {
    record["port"].as_u64().expect("port") as u16
}

/// The `worker_spawn` body for a worker type (model `test-model`, device 0).
pub fn spawn_body(worker_type: &str) -> Value {
    serde_json::json!({
        "operation": "worker_spawn",
        "hive_id": "localhost",
        "model": "test-model",
        "worker": worker_type,
        "device": 0,
    })
}

/// A config section for a worker type that runs the demo worker with extra flags.
pub fn demo_worker_type(name: &str, extra: &[&str], ready_timeout_s: f64) -> String {
    let mut command: Vec<String> = [
        "rbee-demo-worker",
        "--worker-id",
        "{worker_id}",
        "--model",
        "{model}",
        "--port",
        "{port}",
        "--hive-url",
        "{hive_url}",
    ]
    .iter()
    .map(|s| format!("{s:?}"))
    .collect();
    command.extend(extra.iter().map(|s| format!("{s:?}")));
    format!(
        "[workers.{name}]\ncommand = [{}]\nready_timeout_s = {ready_timeout_s}\n",
        command.join(", ")
    )
}

/// A demo worker type `name` that takes `delay_ms` to become ready (`--start-delay-ms`).
pub fn slow_start_type(name: &str, delay_ms: u64, ready_timeout_s: f64) -> String {
    demo_worker_type(
        name,
        &["--start-delay-ms", &delay_ms.to_string()],
        ready_timeout_s,
    )
}

/// The demo worker type `stubborn`: it ignores SIGTERM, so only SIGKILL stops it.
pub fn stubborn_type() -> String {
    demo_worker_type("stubborn", &["--ignore-sigterm"], 10.0)
}

/// A demo worker type `name` that becomes ready, then exits with `code` `after_ms` later.
pub fn crashing_type(name: &str, after_ms: u64, code: i32) -> String {
    let (after, code) = (after_ms.to_string(), code.to_string());
    demo_worker_type(
        name,
        &["--exit-after-ms", &after, "--exit-code", &code],
        10.0,
    )
}

/// A 20-port block in 10000–29999 chosen from `tag`.
fn worker_port_block(tag: &str) -> (u16, u16) {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    tag.hash(&mut hasher);
    let block = (hasher.finish() % 1000) as u16;
    let first = 10_000 + block * 20;
    (first, first + 19)
}

impl Drop for TestHive {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.signal(nix::sys::signal::Signal::SIGTERM);
            if self.wait_exit(Duration::from_secs(30)).is_none()
                && let Some(mut child) = self.child.take()
            {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let leftovers = self.tagged_processes();
        for pid in &leftovers {
            os::signal_pid(*pid, nix::sys::signal::Signal::SIGKILL);
        }
        if !leftovers.is_empty() && !std::thread::panicking() {
            panic!(
                "the hive left processes behind: {leftovers:?}\n{}",
                self.log()
            );
        }
    }
}
