//! Child processes of the test bed: spawned so that none outlives its owner.
//!
//! Attached processes run under `setpriv --pdeathsig KILL`, so the kernel kills them when
//! the thread that forked them dies. Because the kernel tracks the forking *thread*, not
//! the process, every attached spawn goes through one thread that lives as long as the
//! process: a test thread finishing must not take a shared cluster with it, while the
//! test binary exiting, panicking or being killed (Ctrl-C, SIGKILL) always does.
//! Detached processes (`dev-cluster up`) run under `setsid` and are stopped by pid.

use std::{
    fs::File,
    io::{self, Read, Seek, SeekFrom},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Mutex, OnceLock, mpsc},
    thread,
    time::{Duration, Instant},
};

use super::TestbedError;

/// Whether a process dies with this one (tests) or outlives it (`dev-cluster up`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    Attached,
    Detached,
}

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// The long-lived thread that forks every attached child (see the module comment).
fn spawner() -> Option<&'static Mutex<mpsc::Sender<SpawnRequest>>> {
    static SPAWNER: OnceLock<Option<Mutex<mpsc::Sender<SpawnRequest>>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("testbed-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
                // The sender lives in a static and is never dropped: park instead of
                // returning, since this thread's exit would kill every child.
                loop {
                    thread::park();
                }
            })
            .ok()?;
        Some(Mutex::new(tx))
    });
    spawner.as_ref()
}

/// One running component (etcd, kube-apiserver, ...) with its log file.
#[derive(Debug)]
pub struct Process {
    name: String,
    log: PathBuf,
    child: Option<Child>,
    pid: u32,
}

impl Process {
    /// Starts `program args` with stdout and stderr appended to `log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        log: &Path,
        lifetime: Lifetime,
    ) -> Result<Self, TestbedError> {
        Self::start(name, program, args, log, lifetime, None)
    }

    /// [`Process::spawn`] in the working directory `dir` (for relative paths in a
    /// program's configuration, such as kwok's).
    pub fn spawn_in(
        name: &str,
        program: &Path,
        args: &[String],
        log: &Path,
        lifetime: Lifetime,
        dir: &Path,
    ) -> Result<Self, TestbedError> {
        Self::start(name, program, args, log, lifetime, Some(dir))
    }

    fn start(
        name: &str,
        program: &Path,
        args: &[String],
        log: &Path,
        lifetime: Lifetime,
        dir: Option<&Path>,
    ) -> Result<Self, TestbedError> {
        let io_err = |source| TestbedError::Io {
            context: format!("cannot start {name} ({})", program.display()),
            source,
        };
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(io_err)?;
        let err = out.try_clone().map_err(io_err)?;
        let mut cmd = match lifetime {
            Lifetime::Attached => {
                let mut c = Command::new("setpriv");
                c.args(["--pdeathsig", "KILL", "--"]);
                // Own process group: a terminal's Ctrl-C reaches the test binary only,
                // whose death then stops the children through the death signal.
                std::os::unix::process::CommandExt::process_group(&mut c, 0);
                c
            }
            Lifetime::Detached => Command::new("setsid"),
        };
        cmd.arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        if let Some(dir) = dir {
            cmd.current_dir(dir);
        }
        let child = match lifetime {
            Lifetime::Attached => {
                let (tx, rx) = mpsc::channel();
                spawner()
                    .ok_or(TestbedError::Spawner)?
                    .lock()
                    .map_err(|_| TestbedError::Spawner)?
                    .send((cmd, tx))
                    .map_err(|_| TestbedError::Spawner)?;
                rx.recv().map_err(|_| TestbedError::Spawner)?
            }
            Lifetime::Detached => cmd.spawn(),
        }
        .map_err(io_err)?;
        Ok(Self {
            name: name.to_owned(),
            log: log.to_owned(),
            pid: child.id(),
            child: Some(child),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// `Some(status)` once the process has exited (it is reaped then).
    pub fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(e) => Some(format!("unknown ({e})")),
        }
    }

    /// Sends a signal by name (`STOP`, `CONT`, ...) to the process, if it still runs.
    pub fn signal(&self, signal: &str) {
        if self.child.is_some() {
            let _ = Command::new("kill")
                .args([format!("-{signal}"), self.pid.to_string()])
                .status();
        }
    }

    /// Stops the process and waits for it, so its port is free when this returns.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Leaves the process running when this handle is dropped (`dev-cluster up`).
    pub fn release(mut self) -> u32 {
        self.child = None;
        self.pid
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Stops a detached process group started by `setsid` (its pid is its group id).
pub fn kill_group(pid: u32, grace: Duration) {
    let group = format!("-{pid}");
    let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && alive(pid) {
        thread::sleep(Duration::from_millis(100));
    }
    if alive(pid) {
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        while alive(pid) {
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name: "Z" is a zombie.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z')),
        Err(_) => false,
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16, TestbedError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|source| TestbedError::Io {
            context: "cannot find a free port on 127.0.0.1".into(),
            source,
        })
}

/// The last `lines` lines of a log file (at most 64 KiB are read).
pub fn tail(path: &Path, lines: usize) -> String {
    const MAX: u64 = 64 * 1024;
    let Ok(mut file) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(MAX)));
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `sleep 30` started the given way, logging into `dir`.
    fn sleeper(dir: &Path, lifetime: Lifetime) -> Process {
        Process::spawn(
            "sleep",
            Path::new("/bin/sleep"),
            &["30".into()],
            &dir.join("sleep.log"),
            lifetime,
        )
        .unwrap()
    }

    #[test]
    fn tail_returns_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "a\nb\nc\nd\n").unwrap();
        assert_eq!(tail(&path, 2), "c\nd");
        assert_eq!(tail(&path, 10), "a\nb\nc\nd");
        assert!(tail(&dir.path().join("missing"), 2).starts_with("(no log"));
    }

    #[test]
    fn attached_process_is_stopped_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let p = sleeper(dir.path(), Lifetime::Attached);
        let pid = p.pid();
        assert!(alive(pid));
        drop(p);
        assert!(!alive(pid), "pid {pid} still running after drop");
    }

    #[test]
    fn attached_process_survives_the_test_thread_that_started_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let p = thread::spawn(move || sleeper(&path, Lifetime::Attached))
            .join()
            .unwrap();
        // The starting thread is gone; the death signal is tied to the spawner thread.
        thread::sleep(Duration::from_millis(200));
        assert!(alive(p.pid()));
    }

    #[test]
    fn detached_group_is_killed_by_pid() {
        let dir = tempfile::tempdir().unwrap();
        let mut child_handle = sleeper(dir.path(), Lifetime::Detached);
        let pid = child_handle.pid();
        // Reap in the background so the killed process does not linger as a zombie.
        let waiter = thread::spawn(move || {
            let _ = child_handle.child.take().map(|mut c| c.wait());
        });
        assert!(alive(pid));
        kill_group(pid, Duration::from_secs(5));
        waiter.join().unwrap();
        assert!(!alive(pid));
    }
}
