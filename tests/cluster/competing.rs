//! Competing worker processes on one quorum queue with single-active-consumer: three processes
//! of `cluster-worker` (`tests/cluster/bin/worker.rs`), each connected to a different node,
//! consume `jobs.single`. Exactly one of them is fed; when it is killed, one other takes over
//! and the rest of the messages are processed, none lost.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serena::topology::TopologyExt;
use serena::{Error, QueueDeclareOptions, open_connection};

use crate::harness::{self, CaseFuture, config, consumers, eventually, url};
use serena_tests::publish_ids;

const QUEUE: &str = "jobs.single";
const MESSAGES: u64 = 1_000;
const PREFETCH: u16 = 10;

/// What one worker process printed: whether it is ready, and each delivery with the time the
/// line arrived.
#[derive(Default)]
struct Log {
    ready: bool,
    deliveries: Vec<(Instant, u64, bool)>,
}

/// A running `cluster-worker` process; killed when dropped, so a failing case leaves none.
/// It also exits when its standard input closes, which happens when this process dies.
struct Worker {
    tag: &'static str,
    child: Child,
    _stdin: ChildStdin,
    log: Arc<Mutex<Log>>,
}

impl Worker {
    fn spawn(tag: &'static str, node: usize) -> Worker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cluster-worker"))
            .args(["--url", &url(node), "--queue", QUEUE, "--tag", tag])
            .args(["--prefetch", &PREFETCH.to_string(), "--delay-ms", "2"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("cluster-worker starts");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let log = Arc::new(Mutex::new(Log::default()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut log = sink.lock().unwrap();
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    ["ready"] => log.ready = true,
                    ["delivery", id, redelivered] => {
                        let id = id.parse().expect("a numeric body");
                        log.deliveries
                            .push((Instant::now(), id, *redelivered == "1"));
                    }
                    _ => panic!("cluster-worker printed {line:?}"),
                }
            }
        });
        Worker {
            tag,
            child,
            _stdin: stdin,
            log,
        }
    }

    fn ready(&self) -> bool {
        self.log.lock().unwrap().ready
    }

    fn count(&self) -> usize {
        self.log.lock().unwrap().deliveries.len()
    }

    fn deliveries(&self) -> Vec<(Instant, u64, bool)> {
        self.log.lock().unwrap().deliveries.clone()
    }

    /// SIGKILL: the process dies without cancelling, acking or closing anything.
    fn kill(&mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }

    /// SIGTERM, then the exit status (the worker shuts down gracefully).
    async fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop within 15 s of SIGTERM",
                self.tag
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn ready_count(queue: &str, node: usize) -> u32 {
    open_connection(&config(node, "cluster-competing-depth"), async |conn| {
        conn.open_channel(async |ch| {
            let ok = ch
                .queue_declare(queue, QueueDeclareOptions::default().with_passive(true))
                .await?;
            Ok::<_, Error>(ok.message_count)
        })
        .await
    })
    .await
    .expect("connection")
}

pub(crate) fn single_active_consumer() -> CaseFuture {
    Box::pin(async {
        let topology = harness::topology();
        open_connection(&config(0, "cluster-competing-setup"), async |conn| {
            let report = topology.apply(conn).await;
            assert!(report.is_ok(), "{report}");
            conn.open_channel(async |ch| ch.queue_purge(QUEUE).await)
                .await
        })
        .await
        .expect("connection");

        // Three processes, one per node, registered one after the other: the first to
        // register is the active one.
        let mut workers = Vec::new();
        for (i, tag) in ["w1", "w2", "w3"].into_iter().enumerate() {
            let w = Worker::spawn(tag, i);
            eventually(
                &format!("{tag} is ready"),
                Duration::from_secs(20),
                || async { w.ready().then_some(()) },
            )
            .await;
            workers.push(w);
        }
        let listed = eventually(
            "three consumers listed",
            Duration::from_secs(10),
            || async {
                let c = consumers(1, QUEUE).await;
                (c.len() == 3).then_some(c)
            },
        )
        .await;
        let active: Vec<&str> = listed
            .iter()
            .filter(|(_, a)| *a)
            .map(|(t, _)| t.as_str())
            .collect();
        assert_eq!(active, ["w1"], "{listed:?}");

        // Confirmed publishes through node 2.
        let published_at = Instant::now();
        open_connection(&config(1, "cluster-competing-publisher"), async |conn| {
            conn.open_channel(async |ch| publish_ids(ch, "jobs", "single", 0..MESSAGES, 200).await)
                .await
        })
        .await
        .expect("connection");

        // Only the active process is fed.
        eventually(
            "w1 processes 300 messages",
            Duration::from_secs(20),
            || async { (workers[0].count() >= 300).then_some(()) },
        )
        .await;
        let before: Vec<usize> = workers.iter().map(Worker::count).collect();
        assert_eq!(before[1..], [0, 0], "only w1 is active: {before:?}");

        // Kill it mid-stream: one of the others takes over and processes the rest.
        workers[0].kill();
        let killed_at = Instant::now();
        let by_w1 = workers[0].count();
        assert!(
            by_w1 < MESSAGES as usize,
            "w1 finished before it was killed"
        );
        eventually(
            "every message processed after the takeover",
            Duration::from_secs(30),
            || async {
                let mut ids: Vec<u64> = workers
                    .iter()
                    .flat_map(|w| w.deliveries().into_iter().map(|(_, id, _)| id))
                    .collect();
                ids.sort_unstable();
                ids.dedup();
                (ids.len() == MESSAGES as usize).then_some(())
            },
        )
        .await;
        let all_done = published_at.elapsed();
        let after: Vec<usize> = workers.iter().map(Worker::count).collect();
        let fed: Vec<usize> = (1..3).filter(|&i| after[i] > 0).collect();
        assert_eq!(fed.len(), 1, "exactly one successor is fed: {after:?}");
        let successor = fed[0];
        let listed = consumers(1, QUEUE).await;
        assert_eq!(
            listed,
            [
                ("w2".to_owned(), successor == 1),
                ("w3".to_owned(), successor == 2)
            ],
            "after the kill"
        );

        // Zero lost; the duplicates are the messages w1 had processed but not yet acked, at
        // most its prefetch window.
        let all: Vec<(Instant, u64, bool)> = workers.iter().flat_map(Worker::deliveries).collect();
        let mut ids: Vec<u64> = all.iter().map(|(_, id, _)| *id).collect();
        ids.sort_unstable();
        let total = ids.len();
        ids.dedup();
        assert_eq!(ids, (0..MESSAGES).collect::<Vec<_>>(), "lost messages");
        let duplicates = total - ids.len();
        assert!(
            duplicates <= usize::from(PREFETCH),
            "{duplicates} duplicates, more than the prefetch window"
        );
        let takeover = workers[successor].deliveries()[0].0 - killed_at;
        let redelivered = all.iter().filter(|(_, _, r)| *r).count();
        eventually("the queue is empty", Duration::from_secs(10), || async {
            (ready_count(QUEUE, 2).await == 0).then_some(())
        })
        .await;

        // The others stop gracefully on SIGTERM.
        for w in &mut workers[1..] {
            let status = w.terminate().await;
            assert!(status.success(), "{} exited with {status}", w.tag);
        }
        println!(
            "    {MESSAGES} messages: w1 (active) processed {by_w1} before SIGKILL, {} took \
             over after {} ms and processed {}; {} idle; lost 0, duplicates {duplicates}, \
             redelivered {redelivered}; all processed {:.1} s after publishing began",
            workers[successor].tag,
            takeover.as_millis(),
            after[successor],
            workers[3 - successor].tag,
            all_done.as_secs_f64()
        );
    })
}
