//! HTTP load for the proxy's case: keep-alive connections that each send a
//! GET and read its answer at a time, timed one by one (latency) or counted
//! over a while from many at once (throughput).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

/// One keep-alive connection to `port`, asking for `host`.
pub struct Client {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    request: Vec<u8>,
    line: Vec<u8>,
    body: Vec<u8>,
}

impl Client {
    pub fn connect(port: u16, host: &str) -> anyhow::Result<Client> {
        let stream =
            TcpStream::connect((Ipv4Addr::LOCALHOST, port)).with_context(|| format!("connecting to {port}"))?;
        stream.set_nodelay(true)?; // as a browser does: no 40 ms wait for a delayed ACK
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let reader = BufReader::new(stream.try_clone()?);
        let request = format!("GET /health HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\n\r\n").into_bytes();
        Ok(Client { stream, reader, request, line: Vec::new(), body: Vec::new() })
    }

    /// A GET and its whole answer, which must be a 200 with a length.
    pub fn get(&mut self) -> anyhow::Result<()> {
        self.stream.write_all(&self.request)?;
        let (mut status, mut length) = (None, None);
        loop {
            self.line.clear();
            ensure!(self.reader.read_until(b'\n', &mut self.line)? > 0, "the connection closed");
            let line = std::str::from_utf8(&self.line)?.trim_end();
            if line.is_empty() {
                break;
            }
            if status.is_none() {
                status = line.split(' ').nth(1).map(str::to_owned);
            } else if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = Some(value.trim().parse::<usize>()?);
            }
        }
        if status.as_deref() != Some("200") {
            bail!("the answer was {status:?}, not 200");
        }
        self.body.resize(length.context("an answer without Content-Length")?, 0);
        self.reader.read_exact(&mut self.body)?;
        Ok(())
    }
}

/// The time each of `n` requests took, one after another on one
/// connection, after `warm_up` that are not counted.
pub fn latencies(port: u16, host: &str, warm_up: usize, n: usize) -> anyhow::Result<Vec<f64>> {
    let mut client = Client::connect(port, host)?;
    for _ in 0..warm_up {
        client.get()?;
    }
    (0..n)
        .map(|_| {
            let started = Instant::now();
            client.get()?;
            Ok(started.elapsed().as_secs_f64())
        })
        .collect()
}

/// Answers a second from `connections` keep-alive connections at once, each
/// sending its next request once it has its answer, for `period`.
pub fn throughput(port: u16, host: &str, connections: usize, period: Duration) -> anyhow::Result<f64> {
    let start = Barrier::new(connections + 1);
    let (answered, took) = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..connections)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<u64> {
                    let client = Client::connect(port, host);
                    start.wait();
                    let mut client = client?;
                    client.get()?; // the connection's first, not counted: it is not what is measured
                    let (end, mut answered) = (Instant::now() + period, 0);
                    while Instant::now() < end {
                        client.get()?;
                        answered += 1;
                    }
                    Ok(answered)
                })
            })
            .collect();
        start.wait();
        let started = Instant::now();
        let answered: anyhow::Result<u64> = clients.into_iter().map(|c| c.join().expect("a client panicked")).sum();
        (answered, started.elapsed())
    });
    Ok(answered? as f64 / took.as_secs_f64())
}

/// The `q` quantile (0 to 1) of `samples`, by the nearest rank.
pub fn quantile(samples: &[f64], q: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or(f64::NAN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let samples: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!((quantile(&samples, 0.5), quantile(&samples, 0.99), quantile(&samples, 1.0)), (50.0, 99.0, 100.0));
        assert_eq!(quantile(&[3.0], 0.99), 3.0);
    }
}
