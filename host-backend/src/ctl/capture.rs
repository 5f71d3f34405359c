//! `ptnet-ctl capture PORT [-c COUNT] [-s SNAPLEN] -w FILE`: sends `capture`, then copies the
//! pcap stream that follows the daemon's answer into FILE (`-` for stdout) record by record, so
//! that FILE is a valid pcap file whenever it stops. The end record (see the control protocol's
//! notes) is not written: its counts go to stderr. Ctrl-C (or SIGTERM) asks the daemon to end
//! the capture (the socket's write side is shut down), which then sends the end record.

use crate::daemon::control::capture::END_NSEC;
use crate::daemon::control::protocol::{Command, Response};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// The most a capture's answer line may have.
const MAX_ANSWER: usize = 64 << 10;

/// Runs a capture of `port` on the control socket `path`, writing to `file` (`-`: stdout).
pub fn run(path: &Path, cmd: &Command, file: &Path, timeout: Duration) -> ExitCode {
    let fail = |what: String, code: u8| {
        eprintln!("ptnet-ctl: {what}");
        ExitCode::from(code)
    };
    let mut out: Box<dyn Write> = if file == Path::new("-") {
        Box::new(io::stdout().lock())
    } else {
        match File::create(file) {
            Ok(f) => Box::new(io::BufWriter::new(f)),
            Err(e) => return fail(format!("-w {}: {e}", file.display()), 2),
        }
    };
    // SIGINT and SIGTERM go to a thread that ends the capture cleanly.
    crate::sys::block_daemon_signals();
    let unreachable = |e: io::Error| {
        fail(
            format!("cannot reach ptnet-backend at {}: {e}", path.display()),
            1,
        )
    };
    let s = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e) => return unreachable(e),
    };
    let mut line = cmd.to_line();
    line.push('\n');
    if let Err(e) = s
        .set_read_timeout(Some(timeout))
        .and_then(|()| (&s).write_all(line.as_bytes()))
    {
        return unreachable(e);
    }
    let mut r = BufReader::with_capacity(1 << 20, &s);
    let mut answer = Vec::new();
    match (&mut r)
        .take(MAX_ANSWER as u64)
        .read_until(b'\n', &mut answer)
    {
        Ok(_) if answer.last() == Some(&b'\n') => {}
        Ok(_) => return unreachable(io::ErrorKind::UnexpectedEof.into()),
        Err(e) => return unreachable(e),
    }
    let resp: Response = match serde_json::from_slice(&answer) {
        Ok(r) => r,
        Err(e) => return fail(format!("ptnet-backend answered nonsense: {e}"), 1),
    };
    if !resp.ok {
        let why = resp.error.as_deref().unwrap_or("(no reason given)");
        return fail(format!("ptnet-backend refused the request: {why}"), 2);
    }
    if let Ok(s2) = s.try_clone() {
        std::thread::spawn(move || {
            crate::sys::wait_for_signal(None);
            let _ = s2.shutdown(Shutdown::Write);
            // A daemon that does not end the stream soon is not waited for.
            std::thread::sleep(Duration::from_secs(3));
            let _ = s2.shutdown(Shutdown::Both);
        });
    }
    let _ = s.set_read_timeout(None);
    match copy_stream(&mut r, &mut out) {
        Ok((frames, Some(end))) => {
            eprintln!("ptnet-ctl: {frames} frames written; the daemon says {end}");
            ExitCode::SUCCESS
        }
        Ok((frames, None)) => {
            eprintln!("ptnet-ctl: {frames} frames written; the capture ended without its counts (the daemon dropped it)");
            ExitCode::from(1)
        }
        // The reader of `-w -` went (`tcpdump -c`, a closed Wireshark): the capture is over.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => fail(format!("capture: {e}"), 1),
    }
}

/// Copies the pcap header and whole records to `out` until the end record (its JSON body is
/// returned) or the end of the stream. Returns the records written.
fn copy_stream<R: Read>(
    r: &mut BufReader<R>,
    out: &mut dyn Write,
) -> io::Result<(u64, Option<String>)> {
    let mut hdr = [0u8; 24];
    if !read_all(r, &mut hdr)? {
        return Ok((0, None));
    }
    out.write_all(&hdr)?;
    out.flush()?;
    let snaplen = u32::from_le_bytes(hdr[16..20].try_into().expect("4 bytes"));
    let mut frames = 0u64;
    let mut buf = vec![0u8; 16 + 65536];
    loop {
        let (h, rest) = buf.split_at_mut(16);
        if !read_all(r, h)? {
            out.flush()?;
            return Ok((frames, None));
        }
        let word = |o: usize| u32::from_le_bytes(h[o..o + 4].try_into().expect("4 bytes"));
        let (nsec, cap) = (word(4), word(8));
        if cap as usize > rest.len() || (nsec != END_NSEC && cap > snaplen) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a record of {cap} bytes (snap length {snaplen})"),
            ));
        }
        let data = &mut rest[..cap as usize];
        if !read_all(r, data)? {
            out.flush()?;
            return Ok((frames, None));
        }
        if nsec == END_NSEC {
            out.flush()?;
            return Ok((frames, Some(String::from_utf8_lossy(data).into_owned())));
        }
        out.write_all(&buf[..16 + cap as usize])?;
        frames += 1;
        if r.buffer().is_empty() {
            // What came is written before waiting for more (`-w -` feeds a live reader).
            out.flush()?;
        }
    }
}

/// Fills `buf`; false when the stream ends first.
fn read_all(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut at = 0;
    while at < buf.len() {
        match r.read(&mut buf[at..]) {
            Ok(0) => return Ok(false),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}
