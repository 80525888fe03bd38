//! The serving path's own cost (issue 30), a benchmark (`#[ignore]`, run by `make
//! bench`; numbers are printed and written to `target/serving-path.md`, never asserted).
//!
//! The fake engine's `FLOOD` load writes tokens at zero model cost through the real
//! engine loop shape (one step loop, one token per running generation per step) and the
//! real output path, then events → SSE → TLS over real sockets, as a GPU serving a small
//! model at high concurrency would feed it. Measured at 1, 64 and 256 streams: the
//! aggregate tokens per second the path sustains, and the CPU time it spent per token —
//! the server's runtime threads and its engine thread apart from this process's client.
//! Where `perf` works (Debian's linux-perf), a sampled profile of the server's threads
//! says where that time goes, grouped by what the code is.
//!
//! The client runs in this process on the same cores (it decrypts and reads every
//! stream), so on a small machine the figures are a floor of what the path sustains.
#![cfg(feature = "fake-engine")]

mod common;

use common::inprocess::{InProcess, SERVER_THREAD};
use common::{request, Client, Options, ALICE, MODEL_ID};
use http_body_util::BodyExt;
use serde_json::json;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Concurrent streams per measurement.
const STREAMS: [usize; 3] = [1, 64, 256];
/// The engine's step period per measurement (zero: as fast as the path takes tokens,
/// its capacity). 10 ms is a GPU's forward pass over a batch for a 7–8B model (64
/// streams: 6,400 tokens/s), 2 ms for a 1B model (64 streams: 32,000 tokens/s).
const PACES_US: [u64; 3] = [0, 10_000, 2_000];
/// How long a paced measurement runs.
const RUN: Duration = Duration::from_secs(3);
/// Tokens of an unpaced measurement in all, split over its streams: long enough that
/// connection set-up and the last stream's tail are noise.
const TOKENS_PER_RUN: u32 = 64_000;
/// The fake engine's thread (`engine::fake`).
const ENGINE_THREAD: &str = "fake-engine";
/// Linux reports per-thread CPU time in USER_HZ ticks, 100 per second on every
/// architecture Linux supports (it is part of the ABI).
const TICKS_PER_SEC: f64 = 100.0;

/// CPU time of this process's threads, (named `prefix*`, the rest).
fn thread_cpu(prefixes: &[&str]) -> (Duration, Duration) {
    let (mut named, mut rest) = (0u64, 0u64);
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // Fields after the command's closing parenthesis: state is field 3, utime 14,
        // stime 15 (proc(5)).
        let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<u64>().ok());
        let t = ticks(14).unwrap_or(0) + ticks(15).unwrap_or(0);
        if prefixes.iter().any(|p| comm.trim().starts_with(p)) {
            named += t;
        } else {
            rest += t;
        }
    }
    let d = |t: u64| Duration::from_secs_f64(t as f64 / TICKS_PER_SEC);
    (d(named), d(rest))
}

/// Thread ids of the server's threads (runtime and engine), for `perf record -t`.
fn server_tids() -> Vec<String> {
    let mut tids = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.starts_with(SERVER_THREAD) || comm.starts_with(ENGINE_THREAD) {
            tids.push(task.file_name().to_string_lossy().into_owned());
        }
    }
    tids
}

/// One streamed chat completion of `max_tokens` flood tokens on its own TLS connection;
/// returns the completion tokens the server counted (its usage chunk).
async fn stream(mut c: Client, pace_us: u64, max_tokens: u32) -> u32 {
    let flood = format!("{}{pace_us}", llama_gguf_inference::engine::fake::FLOOD);
    let body = json!({
        "model": MODEL_ID,
        "messages": [{"role": "user", "content": flood}],
        "max_tokens": max_tokens,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let req = request(
        "POST",
        "/v1/chat/completions",
        Some(ALICE),
        Some(body.to_string()),
    );
    let resp = c.try_send_raw(req).await.unwrap();
    if resp.status() != 200 {
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        panic!("{}", String::from_utf8_lossy(&body));
    }
    let mut body = resp.into_body();
    // Keep only the tail: the usage chunk is the last event before [DONE].
    let mut tail = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            tail.extend_from_slice(&data);
            if tail.len() > 4096 {
                tail.drain(..tail.len() - 2048);
            }
        }
    }
    let text = String::from_utf8_lossy(&tail);
    let usage = text
        .split("data: ")
        .filter_map(|e| serde_json::from_str::<serde_json::Value>(e.trim()).ok())
        .filter_map(|v| v["usage"]["completion_tokens"].as_u64())
        .last()
        .expect("a usage chunk");
    u32::try_from(usage).unwrap()
}

/// One measurement: `n` streams at once.
struct Run {
    pace_us: u64,
    streams: usize,
    tokens: u64,
    wall: Duration,
    server_cpu: Duration,
    engine_cpu: Duration,
    client_cpu: Duration,
}

async fn measure(server: &InProcess, pace_us: u64, n: usize) -> Run {
    let per_stream = match pace_us {
        0 => TOKENS_PER_RUN / n as u32,
        p => (RUN.as_micros() as u64 / p) as u32,
    };
    // Every connection is up (TLS handshake, first key check) before the clock starts:
    // the rows measure streaming, not connection set-up.
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        let mut c = server.client().await;
        assert_eq!(c.get("/v1/models", Some(ALICE)).await.status, 200);
        clients.push(c);
    }
    let (server0, client0) = thread_cpu(&[SERVER_THREAD, ENGINE_THREAD]);
    let (engine0, _) = thread_cpu(&[ENGINE_THREAD]);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in clients {
        tasks.spawn(stream(c, pace_us, per_stream));
    }
    let mut tokens = 0u64;
    while let Some(t) = tasks.join_next().await {
        tokens += u64::from(t.unwrap());
    }
    let wall = start.elapsed();
    let (server1, client1) = thread_cpu(&[SERVER_THREAD, ENGINE_THREAD]);
    let (engine1, _) = thread_cpu(&[ENGINE_THREAD]);
    Run {
        pace_us,
        streams: n,
        tokens,
        wall,
        server_cpu: server1 - server0,
        engine_cpu: engine1 - engine0,
        client_cpu: client1.saturating_sub(client0),
    }
}

/// What a profile's symbols are, first match wins: (group, markers in the symbol).
const GROUPS: &[(&str, &[&str])] = &[
    (
        "TLS (rustls, ring: record encryption)",
        &["rustls", "ring", "aes_", "gcm_", "gfmul", "chacha", "ghash"],
    ),
    (
        "engine loop and output path (fake engine, UTF-8/stop assembly, events)",
        &["engine::", "mpsc"],
    ),
    (
        "SSE chunk encoding (JSON, the wire)",
        &[
            "api::",
            "serde",
            "itoa",
            "ryu",
            "core::fmt",
            "alloc::fmt",
            "format",
            "indexmap",
            "sip",
        ],
    ),
    ("HTTP (hyper)", &["hyper", "http_body", "h2::"]),
    (
        "async runtime (tokio, wake-ups)",
        &["tokio", "mio", "futures", "parking"],
    ),
    (
        "memory (allocation, copies)",
        &[
            "malloc", "free", "memcpy", "memmove", "realloc", "_int_", "alloc::",
        ],
    ),
];

/// Record the server's threads with `perf` while `work` runs; None where perf is missing
/// or not permitted (then the table says so).
async fn profiled<F: std::future::Future<Output = Run>>(
    work: F,
) -> (Run, Option<Vec<(String, f64)>>) {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/serving-path.perf");
    let perf = Command::new("perf")
        .args(["record", "-q", "-e", "cpu-clock", "-F", "1999", "-o"])
        .arg(&data)
        .arg("-t")
        .arg(server_tids().join(","))
        .stdout(Stdio::null())
        .spawn();
    // Let perf attach before the load starts.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let run = work.await;
    let Ok(perf) = perf else {
        return (run, None);
    };
    let _ = Command::new("kill")
        .args(["-INT", &perf.id().to_string()])
        .status();
    // perf ends on SIGINT with its data written (its exit status then is not 0).
    if perf.wait_with_output().is_err() {
        return (run, None);
    }
    let report = Command::new("perf")
        .args([
            "report",
            "--stdio",
            "--no-children",
            "--sort",
            "symbol",
            "-i",
        ])
        .arg(&data)
        .stderr(Stdio::null())
        .output();
    let Ok(report) = report else {
        return (run, None);
    };
    let mut groups: Vec<(String, f64)> = GROUPS.iter().map(|g| (g.0.to_string(), 0.0)).collect();
    let (mut kernel, mut other) = (0.0, 0.0);
    for line in String::from_utf8_lossy(&report.stdout).lines() {
        let line = line.trim();
        let Some((pct, sym)) = line.split_once('%') else {
            continue;
        };
        let Ok(pct) = pct.trim().parse::<f64>() else {
            continue;
        };
        let sym = sym.trim();
        if sym.starts_with("[k]") {
            kernel += pct;
            continue;
        }
        let sym = sym.to_ascii_lowercase();
        match GROUPS
            .iter()
            .position(|(_, marks)| marks.iter().any(|m| sym.contains(m)))
        {
            Some(i) => groups[i].1 += pct,
            None => other += pct,
        }
    }
    groups.push((
        "kernel (syscalls: socket writes, epoll, futex)".into(),
        kernel,
    ));
    groups.push(("other".into(), other));
    groups.sort_by(|a, b| b.1.total_cmp(&a.1));
    (run, Some(groups))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with `make bench`"]
async fn bench_serving_path() {
    let server = InProcess::start(Options {
        model_section: format!("context = {TOKENS_PER_RUN}\nthreads = 1\nparallel = 256\n"),
        // One client address opens every stream.
        server_extra: "max_connections_per_address = 512\n".into(),
        auth_extra: "max_concurrent_generations_per_key = 512\n".into(),
        extra_toml: format!("[limits]\nqueue_depth = 512\nmax_tokens = {TOKENS_PER_RUN}\n"),
        ..Options::default()
    });
    // Warm-up: first key verification, first connections.
    measure(&server, 0, 4).await;
    let mut runs = Vec::new();
    let mut profile = None;
    // The profile: the most streams at the fastest device pace.
    let profiled_row = (*PACES_US.last().unwrap(), *STREAMS.last().unwrap());
    for pace_us in PACES_US {
        for n in STREAMS {
            if (pace_us, n) == profiled_row {
                let (run, p) = profiled(measure(&server, pace_us, n)).await;
                runs.push(run);
                profile = p;
            } else {
                runs.push(measure(&server, pace_us, n).await);
            }
        }
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut md = String::new();
    let _ = writeln!(md, "## Serving path at zero model cost (fake engine)\n");
    let _ = writeln!(
        md,
        "`tests/serving_path.rs`: the fake engine's flood load (one step loop, one token per stream per step, the real output path) → events → chat SSE → TLS 1.3 over loopback, client in the same process on the same {cores} CPUs. Unpaced rows: {TOKENS_PER_RUN} tokens split over the streams, as fast as the path takes them (tokens that queue up leave in fewer, larger writes). Paced rows: one step per period for {} s, like a device's forward pass (every token its own event and write while the path keeps up). CPU columns are seconds of CPU per second of wall time (1.00 = one core busy).\n",
        RUN.as_secs()
    );
    let _ = writeln!(
        md,
        "| engine step | streams | asked tokens/s | tokens/s | server CPU (cores) | of which engine loop | client CPU (cores) | server CPU per token |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
    for r in &runs {
        let wall = r.wall.as_secs_f64();
        let (step, asked) = match r.pace_us {
            0 => ("unpaced".to_string(), "-".to_string()),
            p => (
                format!("{} ms", p as f64 / 1000.0),
                format!("{:.0}", r.streams as f64 * 1e6 / p as f64),
            ),
        };
        let _ = writeln!(
            md,
            "| {step} | {} | {asked} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} µs |",
            r.streams,
            r.tokens as f64 / wall,
            r.server_cpu.as_secs_f64() / wall,
            r.engine_cpu.as_secs_f64() / wall,
            r.client_cpu.as_secs_f64() / wall,
            r.server_cpu.as_secs_f64() * 1e6 / r.tokens as f64,
        );
    }
    let _ = writeln!(
        md,
        "\nWhere the server's time goes at {} streams, {} ms steps (`perf record -e cpu-clock` on its threads, symbols grouped; connection set-up included):\n",
        profiled_row.1,
        profiled_row.0 as f64 / 1000.0
    );
    match &profile {
        Some(groups) => {
            let _ = writeln!(md, "| part | share of server CPU |");
            let _ = writeln!(md, "|---|---|");
            for (name, pct) in groups {
                let _ = writeln!(md, "| {name} | {pct:.1}% |");
            }
        }
        None => {
            let _ = writeln!(md, "(perf is not available here: no profile.)");
        }
    }
    print!("\n{md}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/serving-path.md");
    std::fs::write(out, &md).unwrap();
}
