//! Running as a service (issue 14): systemd's notify protocol spoken to a datagram socket of
//! the test's own, the watchdog, SIGHUP reloads, socket activation across a restart under
//! load, the default config file, and the token on every route.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rbee_hive_e2e::wait::{wait_for, wait_for_every, wait_until};
use rbee_hive_e2e::{TestHive, demo_worker_type};
use tokio::net::UnixDatagram;

/// A `NOTIFY_SOCKET` of the test's own: every datagram the hive sends, with when it came.
struct NotifySocket {
    socket: UnixDatagram,
    path: String,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn bind() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify").display().to_string();
        let socket = UnixDatagram::bind(&path).unwrap();
        Self {
            socket,
            path,
            _dir: dir,
        }
    }

    /// The next datagram.
    async fn recv(&self) -> String {
        let mut buffer = vec![0; 4096];
        let n = self.socket.recv(&mut buffer).await.expect("recv");
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    }

    /// The next datagram, or `None` after `timeout`.
    async fn next(&self, timeout: Duration) -> Option<String> {
        tokio::time::timeout(timeout, self.recv()).await.ok()
    }

    /// Datagrams until one holds `line` as a line (within 30 s); returns that one and those
    /// before it.
    async fn until(&self, line: &str) -> (String, Vec<String>) {
        let mut before = Vec::new();
        let found = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let message = self.recv().await;
                if message.lines().any(|l| l == line || l.starts_with(line)) {
                    return message;
                }
                before.push(message);
            }
        })
        .await;
        match found {
            Ok(message) => (message, before),
            Err(_) => panic!("no {line:?} from the hive; got {before:?}"),
        }
    }
}

/// The number of workers a `STATUS=` line counts.
fn workers_in_status(message: &str) -> u32 {
    let status = message
        .lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .unwrap_or_else(|| panic!("no STATUS in {message:?}"));
    status
        .split(", ")
        .filter_map(|part| part.split_whitespace().next()?.parse::<u32>().ok())
        .sum()
}

#[tokio::test]
async fn notify_says_ready_after_adoption_then_reloading_and_stopping() {
    let notify = NotifySocket::bind();
    let mut hive = TestHive::builder()
        .env("NOTIFY_SOCKET", &notify.path)
        .config("on_shutdown = \"keep\"")
        .start()
        .await;
    let (ready, _) = notify.until("READY=1").await;
    assert_eq!(workers_in_status(&ready), 0, "{ready}");
    let worker = hive.spawn_ready("demo").await;
    let id = worker["id"].as_str().unwrap().to_owned();
    let (status, _) = notify.until("STATUS=1 ready").await;
    assert_eq!(workers_in_status(&status), 1);

    // A reload: RELOADING=1 with the monotonic time, then READY=1 again.
    hive.signal(Signal::SIGHUP);
    let (reloading, _) = notify.until("RELOADING=1").await;
    assert!(
        reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading}"
    );
    notify.until("READY=1").await;

    hive.signal(Signal::SIGTERM);
    notify.until("STOPPING=1").await;
    hive.wait_exit(Duration::from_secs(30)).expect("exited");

    // Started again: READY=1 comes only once the kept worker is adopted.
    hive.restart();
    let (ready, _) = notify.until("READY=1").await;
    assert_eq!(workers_in_status(&ready), 1, "{ready}");
    assert_eq!(hive.worker(&id).await.unwrap()["pid"], worker["pid"]);
    hive.delete_worker(&id).await;
}

#[tokio::test]
async fn the_watchdog_is_pinged_until_the_runtime_wedges() {
    let notify = NotifySocket::bind();
    let mut hive = TestHive::builder()
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", "200000")
        .env("RBEE_HIVE_TEST_WEDGE_ON_SIGUSR2", "1")
        .start()
        .await;
    notify.until("READY=1").await;
    let mut pings = 0;
    while pings < 5 {
        let message = notify
            .next(Duration::from_secs(10))
            .await
            .expect("a watchdog ping");
        if message.lines().any(|l| l == "WATCHDOG=1") {
            pings += 1;
        }
    }
    // (Their interval, half of WATCHDOG_USEC, is a unit test of `service`.)
    hive.signal(Signal::SIGUSR2);
    // Pings already sent may still be read; after a quiet second, none comes any more.
    tokio::time::timeout(Duration::from_secs(30), async {
        while notify.next(Duration::from_secs(1)).await.is_some() {}
    })
    .await
    .expect("the pings stop");
    assert!(notify.next(Duration::from_secs(2)).await.is_none());
    // A wedged hive does not answer SIGTERM either: as systemd would, kill it.
    hive.kill_hard();
}

#[tokio::test]
async fn sighup_applies_a_good_file_and_keeps_the_config_when_the_file_is_bad() {
    let mut hive = TestHive::builder().token("first").start().await;
    let worker = hive.spawn_ready("demo").await;
    let id = worker["id"].as_str().unwrap().to_owned();
    let config_path = hive.dir.path().join("hive.toml");
    let original = std::fs::read_to_string(&config_path).unwrap();

    // A good file: a new token, a new worker type, debug logging.
    std::fs::write(hive.dir.path().join("token"), "second").unwrap();
    let good = format!(
        "log_level = \"debug\"\n{original}\n{}",
        demo_worker_type("echo", &[], 30.0)
    );
    std::fs::write(&config_path, &good).unwrap();
    hive.signal(Signal::SIGHUP);
    let client = reqwest::Client::new();
    let jobs_url = hive.url("/v1/jobs");
    let with = |token: &str| {
        client
            .get(&jobs_url)
            .header("authorization", format!("Bearer {token}"))
            .send()
    };
    wait_for(
        "the new token takes effect",
        Duration::from_secs(30),
        || async { with("second").await.unwrap().status() },
        |status| *status == 200,
    )
    .await;
    assert_eq!(with("first").await.unwrap().status(), 401);
    assert!(
        hive.log().contains("config reloaded; applied:"),
        "{}",
        hive.log()
    );
    assert!(hive.log().contains("log_level"), "{}", hive.log());
    hive.set_token("second");
    let echo = hive.spawn_ready("echo").await;
    // The worker that ran before the reload is untouched.
    let before = hive.worker(&id).await.unwrap();
    assert_eq!(before["pid"], worker["pid"]);
    assert_eq!(before["status"], "Ready");

    // A bad file: refused, the config in effect stays, the hive goes on.
    std::fs::write(&config_path, "this is not = = toml").unwrap();
    hive.signal(Signal::SIGHUP);
    wait_until("the refusal is logged", Duration::from_secs(30), || {
        hive.log().contains("config reload refused")
    })
    .await;
    assert_eq!(with("second").await.unwrap().status(), 200);
    let samples = hive.metrics().await;
    for (outcome, count) in [("applied", 1.0), ("refused", 1.0)] {
        assert_eq!(
            rbee_hive_e2e::openmetrics::value(
                &samples,
                "rbee_hive_config_reloads_total",
                &[("outcome", outcome)]
            ),
            Some(count),
            "{outcome}"
        );
    }
    for id in [id.as_str(), echo["id"].as_str().unwrap()] {
        hive.delete_worker(id).await;
    }
}

// Several threads: the test's own waits for the hive (blocking) must not hold the clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_an_inherited_socket_a_restart_under_load_refuses_nothing() {
    let listener = Arc::new(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let address = listener.local_addr().unwrap();
    let mut hive = TestHive::builder()
        .inherit_listener(listener.clone())
        .config("on_shutdown = \"keep\"")
        .start()
        .await;
    assert_eq!(
        hive.addr, address,
        "the hive serves on the inherited socket"
    );
    let worker = hive.spawn_ready("demo").await;
    let id = worker["id"].as_str().unwrap().to_owned();

    // 64 clients, each a new connection per request, until told to stop.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed, slowest_ms) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut clients = Vec::new();
    for n in 0..64 {
        let (stop, ok, failed, slowest_ms, client) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            slowest_ms.clone(),
            client.clone(),
        );
        let path = if n % 2 == 0 { "/health" } else { "/v1/jobs" };
        clients.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                match client.get(format!("http://{address}{path}")).send().await {
                    Ok(response) if response.status().is_success() => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(response) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        errors.push(format!("{path}: {}", response.status()));
                    }
                    Err(error) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        errors.push(format!("{path}: {error:?}"));
                    }
                }
                slowest_ms.fetch_max(started.elapsed().as_millis() as u64, Ordering::Relaxed);
            }
            errors
        }));
    }
    // The load runs against the first hive before it is restarted.
    wait_until("the first hive answers", Duration::from_secs(30), || {
        ok.load(Ordering::Relaxed) >= 200
    })
    .await;
    let before_restart = ok.load(Ordering::Relaxed);
    hive.signal(Signal::SIGTERM);
    hive.wait_exit(Duration::from_secs(30))
        .expect("the old hive exited");
    hive.restart();
    let after_restart = ok.load(Ordering::Relaxed);
    wait_until("the new hive answers", Duration::from_secs(30), || {
        ok.load(Ordering::Relaxed) >= after_restart + 200
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for client in clients {
        errors.extend(client.await.unwrap());
    }
    eprintln!(
        "requests: {} ok, {} failed; slowest {} ms",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        slowest_ms.load(Ordering::Relaxed)
    );
    assert!(before_restart > 0);
    assert_eq!(failed.load(Ordering::Relaxed), 0, "{errors:#?}");
    // on_shutdown = "keep": the worker was adopted, not restarted.
    assert_eq!(hive.worker(&id).await.unwrap()["pid"], worker["pid"]);
    hive.delete_worker(&id).await;
}

#[tokio::test]
async fn without_config_flag_the_default_config_file_is_read() {
    let config_home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(config_home.path().join("rbee")).unwrap();
    std::fs::write(
        config_home.path().join("rbee/hive.toml"),
        "hive_id = \"from-xdg\"\n",
    )
    .unwrap();
    let hive = TestHive::builder()
        .without_config_flag()
        .env("XDG_CONFIG_HOME", &config_home.path().display().to_string())
        .start()
        .await;
    let response = hive.get("/health").await;
    assert_eq!(response.headers()["x-rbee-hive-id"], "from-xdg");
    assert!(
        hive.log().contains(&format!(
            "config file: {}",
            config_home.path().join("rbee/hive.toml").display()
        )),
        "{}",
        hive.log()
    );
}

#[tokio::test]
async fn every_route_but_health_needs_the_token_and_the_scheme_is_any_case() {
    let hive = TestHive::builder().token("s3cret").start().await;
    let bare = reqwest::Client::new();
    for (method, path) in [
        ("GET", "/no/such/route"),
        ("PUT", "/v1/jobs"),
        ("GET", "/metrics"),
        ("GET", "/v1/jobs"),
    ] {
        let response = bare
            .request(method.parse().unwrap(), hive.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{method} {path}");
    }
    assert_eq!(
        bare.get(hive.url("/health")).send().await.unwrap().status(),
        200
    );
    // /health is open whatever the method: a wrong one is a 405.
    assert_eq!(
        bare.post(hive.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let response = bare
            .get(hive.url("/v1/jobs"))
            .header("authorization", format!("{scheme} s3cret"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{scheme}");
    }
    // With the token, an unknown route is a 404 again.
    assert_eq!(hive.get("/no/such/route").await.status(), 404);
}

/// Whether the hive has closed `connection` (without waiting: an open one has nothing to
/// read).
fn is_closed(connection: &tokio::net::TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match connection.try_read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// Sends `GET <path>` on a new connection and returns it with the start of the answer.
async fn get_on_new_connection(hive: &TestHive, path: &str) -> (tokio::net::TcpStream, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut connection = tokio::net::TcpStream::connect(hive.addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n");
    let _ = connection.write_all(request.as_bytes()).await;
    let mut buffer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), connection.read(&mut buffer))
        .await
        .expect("an answer")
        .unwrap_or(0);
    (
        connection,
        String::from_utf8_lossy(&buffer[..n]).into_owned(),
    )
}

#[tokio::test]
async fn at_the_cap_a_new_connection_replaces_the_longest_idle_one_and_only_busy_ones_get_503() {
    let hive = TestHive::with_config(&["header_timeout_s = 60", "max_connections = 8"]).await;
    // Eight kept-alive connections, idle after one request each, fill the cap, in order.
    let mut idle = Vec::new();
    for _ in 0..8 {
        let (connection, answer) = get_on_new_connection(&hive, "/health").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        idle.push(connection);
    }
    // /health on a ninth connection is answered: it takes the place of the connection idle
    // longest, the first, which is closed; the others stay.
    let (_ninth, answer) = get_on_new_connection(&hive, "/health").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    wait_until(
        "an idle connection is closed",
        Duration::from_secs(10),
        || idle.iter().any(is_closed),
    )
    .await;
    let closed: Vec<bool> = idle.iter().map(is_closed).collect();
    assert_eq!(
        closed,
        [true, false, false, false, false, false, false, false]
    );

    // Eight telemetry streams are requests in flight: they take every place, and are never
    // closed for a newcomer; a new connection is then answered 503.
    let mut streams = Vec::new();
    for _ in 0..8 {
        let (stream, answer) = get_on_new_connection(&hive, "/v1/heartbeats/stream").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        streams.push(stream);
    }
    let (_, answer) = get_on_new_connection(&hive, "/health").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("\"code\":\"overloaded\""), "{answer}");
    assert!(!streams.iter().any(is_closed));
    // A stream that ends gives its place back.
    drop(streams.pop());
    wait_for(
        "/health is answered on a new connection",
        Duration::from_secs(10),
        || async { get_on_new_connection(&hive, "/health").await.1 },
        |answer| answer.starts_with("HTTP/1.1 200"),
    )
    .await;
}

#[tokio::test]
async fn silent_connections_time_out_and_kept_alive_ones_last_until_their_idle_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let hive = TestHive::with_config(&["header_timeout_s = 1", "idle_timeout_s = 2"]).await;
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(tokio::net::TcpStream::connect(hive.addr).await.unwrap());
    }
    // The silent ones are closed after the header timeout…
    for mut connection in silent {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(10), connection.read(&mut byte))
            .await
            .expect("a silent connection was closed");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    // …and /health answers again; a kept-alive connection lasts until its idle timeout.
    let mut kept = tokio::net::TcpStream::connect(hive.addr).await.unwrap();
    kept.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = vec![0u8; 4096];
    let n = kept.read(&mut buffer).await.unwrap();
    assert!(String::from_utf8_lossy(&buffer[..n]).starts_with("HTTP/1.1 200"));
    let idle_from = Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(10), kept.read(&mut buffer))
        .await
        .expect("the idle connection was closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        idle_from.elapsed() >= Duration::from_millis(1500),
        "closed after {:?}, before its idle timeout",
        idle_from.elapsed()
    );
}

/// Reads what the hive sends on `connection` until it closes it (at most 10 s).
async fn read_to_close(connection: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), connection.read_to_end(&mut answer))
        .await
        .expect("the hive closed the connection");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn at_shutdown_idle_connections_close_at_once_and_arriving_requests_are_served() {
    use tokio::io::AsyncWriteExt;
    let mut hive = TestHive::start().await;
    // The worker keeps an idle heartbeat connection to the hive, as every rbee worker does.
    let worker = hive.spawn_ready("demo").await;
    let worker_pid = worker["pid"].as_u64().unwrap() as u32;
    // A kept-alive connection, idle after one request…
    let (mut kept, answer) = get_on_new_connection(&hive, "/health").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // …one whose next request has begun to arrive…
    let (mut arriving, answer) = get_on_new_connection(&hive, "/health").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    arriving
        .write_all(b"GET /health HTTP/1.1\r\n")
        .await
        .unwrap();
    // …and a fresh one that has sent nothing yet; the answer on a later connection shows
    // that the hive accepted it (connections are accepted in order).
    let mut fresh = tokio::net::TcpStream::connect(hive.addr).await.unwrap();
    let (_, answer) = get_on_new_connection(&hive, "/health").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    hive.signal(Signal::SIGTERM);
    // The idle connection is closed at once, without an answer: no request was on its way.
    assert_eq!(read_to_close(&mut kept).await, "");
    // While the requests on their way are still served, each closing its connection.
    arriving.write_all(b"host: x\r\n\r\n").await.unwrap();
    fresh
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    for connection in [&mut arriving, &mut fresh] {
        let answer = read_to_close(connection).await.to_lowercase();
        assert!(answer.starts_with("http/1.1 200"), "{answer}");
        assert!(answer.contains("connection: close"), "{answer}");
    }
    let status = hive.wait_exit(Duration::from_secs(30)).expect("hive exits");
    assert_eq!(status.code(), Some(0), "{}", hive.log());
    assert!(!rbee_hive_e2e::os::pid_alive(worker_pid));
}

#[tokio::test]
async fn at_shutdown_an_answer_that_is_still_being_sent_is_sent_whole() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut hive = TestHive::start().await;
    let worker = hive.spawn_ready("demo").await;
    let id = worker["id"].as_str().unwrap().to_owned();
    // A log far larger than the kernel's socket buffers, so that the end of its answer waits
    // in the hive while the client does not read.
    let log = worker["log_path"].as_str().unwrap().to_owned();
    {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        let line = "x".repeat(1023) + "\n";
        for _ in 0..(24 * 1024) {
            file.write_all(line.as_bytes()).unwrap();
        }
        file.write_all(b"the last line\n").unwrap();
    }
    let expected = std::fs::metadata(&log).unwrap().len();
    let mut connection = tokio::net::TcpStream::connect(hive.addr).await.unwrap();
    connection
        .write_all(format!("GET /v1/workers/{id}/logs HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // The hive has filled the socket's buffers (what the client has received stops
    // growing between two looks 50 ms apart): what it has not sent yet waits in the hive.
    let last = std::cell::Cell::new(0);
    wait_for_every(
        "the answer fills the socket's buffers",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async { connection.peek(&mut vec![0u8; 8 << 20]).await.unwrap() },
        |&available| {
            let before = last.replace(available);
            available >= 64 << 10 && available == before
        },
    )
    .await;
    hive.signal(Signal::SIGTERM);
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), connection.read_to_end(&mut answer))
        .await
        .expect("the answer ends")
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    let body_start = text.find("\r\n\r\n").expect("a head") + 4;
    let chunked = text[..body_start]
        .to_lowercase()
        .contains("transfer-encoding: chunked");
    assert!(chunked || text[..body_start].to_lowercase().contains("content-length"));
    if chunked {
        assert!(
            text.ends_with("0\r\n\r\n"),
            "the last chunk came: …{}",
            &text[text.len().saturating_sub(200)..]
        );
        assert!(text.contains("the last line\n"), "the whole log came");
    } else {
        assert_eq!(
            (answer.len() - body_start) as u64,
            expected,
            "the whole log came"
        );
    }
    assert!(hive.wait_exit(Duration::from_secs(30)).is_some());
}
