//! Reflects every frame a port receives back out of it, source and destination MAC addresses
//! swapped, until the daemon goes away or nothing arrives for ten seconds.
//!
//! ```text
//! cargo run -p ptnet-driver --example echo -- vhost-user:/tmp/ptnet/vale0:1.sock
//! ```

use ptnet_driver::{Error, Port, RingId};
use std::process::ExitCode;
use std::time::Duration;

/// Moves every received frame of RX ring `i` to TX ring `i mod n`, MACs swapped. Returns how many.
fn echo_round(port: &mut Port, buf: &mut [u8]) -> Result<u64, Error> {
    let mut echoed = 0;
    for i in 0..port.num_rx_rings() {
        let t = i % port.num_tx_rings();
        port.rx_ring(i).rxsync()?;
        loop {
            if port.tx_ring(t).space() == 0 {
                // Leave the rest in the RX ring until the host has sent some.
                port.tx_ring(t).txsync()?;
                if port.tx_ring(t).space() == 0 {
                    break;
                }
            }
            let Some(len) = port.rx_ring(i).recv(buf) else {
                break;
            };
            let len = len.min(buf.len());
            let frame = &mut buf[..len];
            if frame.len() >= 12 {
                let (dst, src) = frame.split_at_mut(6);
                dst.swap_with_slice(&mut src[..6]);
            }
            if port.tx_ring(t).send(frame) {
                echoed += 1;
            }
        }
        port.tx_ring(t).txsync()?;
    }
    Ok(echoed)
}

fn run(spec: &str) -> Result<u64, Error> {
    let mut port = Port::open(spec)?;
    eprintln!("echo: {} attached, mac {:02x?}", port.name(), port.mac());
    let rx: Vec<RingId> = (0..port.num_rx_rings()).map(RingId::Rx).collect();
    let mut buf = vec![0u8; port.buf_size() as usize];
    let mut total = 0;
    loop {
        let n = echo_round(&mut port, &mut buf)?;
        total += n;
        if n == 0 && !port.wait_any(&rx, Some(Duration::from_secs(10)))? {
            return Ok(total);
        }
    }
}

fn main() -> ExitCode {
    let Some(spec) = std::env::args().nth(1) else {
        eprintln!("usage: echo PORT (vhost-user:PATH, ptnetN, ...)");
        return ExitCode::from(2);
    };
    match run(&spec) {
        Ok(n) => {
            println!("echoed {n} frames, then nothing for 10 s");
            ExitCode::SUCCESS
        }
        Err(Error::Disconnected { port }) => {
            eprintln!("echo: {port}: the daemon went away");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("echo: {e}");
            ExitCode::from(1)
        }
    }
}
