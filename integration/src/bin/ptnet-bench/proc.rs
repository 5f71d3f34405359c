//! Processes for the benchmark: spawned pinned, their output captured line by line with arrival
//! times (so rates can be taken over a window), stopped with a signal.

use nix::sched::{sched_setaffinity, CpuSet};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{sysconf, Pid, SysconfVar};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One captured output line and when it arrived.
#[derive(Clone, Debug)]
pub struct Line {
    /// Arrival time.
    pub at: Instant,
    /// The text, without the newline.
    pub text: String,
}

type Lines = Arc<Mutex<Vec<Line>>>;

/// A running process whose stdout and stderr are captured; killed on drop.
#[derive(Debug)]
pub struct Proc {
    /// A short name for messages.
    pub name: String,
    child: Option<Child>,
    out: Lines,
    err: Lines,
    readers: Vec<JoinHandle<()>>,
}

fn read_lines<R: Read + Send + 'static>(r: R, sink: Lines) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        while let Ok(n) = r.read_until(b'\n', &mut buf) {
            if n == 0 {
                break;
            }
            let at = Instant::now();
            let text = String::from_utf8_lossy(&buf).trim_end().to_string();
            // testpmd redraws with escape sequences; keep the printable part.
            let text = strip_ansi(&text);
            sink.lock().expect("lines lock").push(Line { at, text });
            buf.clear();
        }
    })
}

/// Removes ANSI escape sequences (`ESC [ ... letter`).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\x1b' {
            if it.peek() == Some(&'[') {
                it.next();
                for d in it.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

impl Proc {
    /// Spawns `prog args...`, pinned to `cpus` (taskset list syntax) unless `None`.
    pub fn spawn(
        name: &str,
        cpus: Option<&str>,
        prog: &Path,
        args: &[String],
    ) -> Result<Self, String> {
        let mut cmd = match cpus {
            Some(c) => {
                let mut cmd = Command::new("taskset");
                cmd.arg("-c").arg(c).arg(prog);
                cmd
            }
            None => Command::new(prog),
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("{name}: starting {}: {e}", prog.display()))?;
        let out: Lines = Arc::default();
        let err: Lines = Arc::default();
        let readers = vec![
            read_lines(child.stdout.take().expect("piped"), out.clone()),
            read_lines(child.stderr.take().expect("piped"), err.clone()),
        ];
        Ok(Self {
            name: name.to_string(),
            child: Some(child),
            out,
            err,
            readers,
        })
    }

    /// Its pid (`None` once stopped). Spawned through `taskset` or `stdbuf`, which exec the
    /// program, so it is the program's.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Still running?
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Stdout lines so far.
    pub fn stdout(&self) -> Vec<Line> {
        self.out.lock().expect("lines lock").clone()
    }

    /// Stderr lines so far.
    pub fn stderr(&self) -> Vec<Line> {
        self.err.lock().expect("lines lock").clone()
    }

    /// Stdout and stderr so far, as text (for error messages).
    pub fn text(&self) -> String {
        let mut s = String::new();
        for l in self.stdout().iter().chain(self.stderr().iter()) {
            s.push_str(&l.text);
            s.push('\n');
        }
        s
    }

    /// The last lines of its output (for error messages).
    pub fn tail(&self, n: usize) -> String {
        let t = self.text();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Waits until a line (stdout or stderr) satisfies `pred`, the process exits, or `timeout`.
    pub fn wait_line(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if self
                .stdout()
                .iter()
                .chain(self.stderr().iter())
                .any(|l| pred(&l.text))
            {
                return Ok(());
            }
            if !self.running() {
                return Err(format!("{} exited:\n{}", self.name, self.tail(30)));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{}: expected output did not appear within {timeout:?}:\n{}",
                    self.name,
                    self.tail(30)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for it to exit on its own (up to `timeout`, then kills it); true when it exited.
    pub fn wait(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut exited = false;
        if let Some(c) = self.child.as_mut() {
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    exited = true;
                    break;
                }
                if Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.stop(Signal::SIGKILL, Duration::ZERO);
        exited
    }

    /// Sends `sig`, waits up to `grace`, then SIGKILL; collects the output readers.
    pub fn stop(&mut self, sig: Signal, grace: Duration) {
        if let Some(mut c) = self.child.take() {
            if let Ok(None) = c.try_wait() {
                // The pid of a child we own and have not reaped.
                let _ = kill(Pid::from_raw(c.id() as i32), sig);
                let deadline = Instant::now() + grace;
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = c.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                let _ = c.kill();
            }
            let _ = c.wait();
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Signal::SIGKILL, Duration::ZERO);
    }
}

/// Runs a command to completion; Ok(stdout) when it succeeded.
pub fn sh(prog: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{prog}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{prog} {}: {}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// utime + stime of a process, in seconds (all its threads).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let hz = sysconf(SysconfVar::CLK_TCK).ok().flatten()? as f64;
    Some((utime + stime) / hz)
}

/// CPU time of a set of processes over a window: [`CpuMeter::start`] at its beginning,
/// [`CpuMeter::finish`] at its end.
pub struct CpuMeter {
    at: Instant,
    start: Vec<(String, u32, f64)>,
}

/// What a [`CpuMeter`] measured: each process's CPU seconds, and the window's length (s).
#[derive(Clone, Debug, Default)]
pub struct CpuUse {
    /// (process, CPU seconds over the window).
    pub per_proc: Vec<(String, f64)>,
    /// The window (s).
    pub window_s: f64,
}

impl CpuUse {
    /// Every process's CPU seconds, summed.
    pub fn total(&self) -> f64 {
        self.per_proc.iter().map(|(_, c)| c).sum()
    }
}

impl CpuMeter {
    /// Reads utime + stime of each (name, pid) now.
    pub fn start(procs: &[(&str, Option<u32>)]) -> Result<Self, String> {
        let mut start = Vec::new();
        for (name, pid) in procs {
            let pid = pid.ok_or_else(|| format!("{name} is not running"))?;
            let c =
                cpu_seconds(pid).ok_or_else(|| format!("cannot read /proc/{pid}/stat ({name})"))?;
            start.push((name.to_string(), pid, c));
        }
        Ok(Self {
            at: Instant::now(),
            start,
        })
    }

    /// Reads them again: what each used since [`CpuMeter::start`].
    pub fn finish(&self) -> Result<CpuUse, String> {
        let mut per_proc = Vec::new();
        for (name, pid, c0) in &self.start {
            let c1 = cpu_seconds(*pid)
                .ok_or_else(|| format!("{name} (pid {pid}) exited during the measurement"))?;
            per_proc.push((name.clone(), c1 - c0));
        }
        Ok(CpuUse {
            per_proc,
            window_s: self.at.elapsed().as_secs_f64(),
        })
    }
}

/// Sleeps until `t`.
pub fn sleep_until(t: Instant) {
    std::thread::sleep(t.saturating_duration_since(Instant::now()));
}

/// Average rate over the samples that arrived in `[from, to]`: `parse` returns a rate from a line.
pub fn window_mean(
    lines: &[Line],
    from: Instant,
    to: Instant,
    parse: impl Fn(&str) -> Option<f64>,
) -> Option<(f64, usize)> {
    let v: Vec<f64> = lines
        .iter()
        .filter(|l| l.at >= from && l.at <= to)
        .filter_map(|l| parse(&l.text))
        .collect();
    if v.is_empty() {
        None
    } else {
        Some((v.iter().sum::<f64>() / v.len() as f64, v.len()))
    }
}

/// Pins the calling thread to the CPUs in `cpus` (best effort, as a benchmark helper).
pub fn pin_self_to(cpus: impl IntoIterator<Item = usize>) {
    let mut set = CpuSet::new();
    for c in cpus {
        let _ = set.set(c);
    }
    // Pid 0: the calling thread.
    let _ = sched_setaffinity(Pid::from_raw(0), &set);
}

pub fn pin_self(cpu: usize) {
    pin_self_to([cpu]);
}
