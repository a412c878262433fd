//! Recording servers on free loopback ports that stand in for the services alerts are
//! sent to: a listener thread, a thread per connection, and the records shared with
//! the test. What a connection speaks (HTTP, SMTP) and what is kept is the caller's.

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;

use crate::{read_http_request_with_path, wait_until};

/// A loopback server that keeps what its connections record.
#[derive(Debug)]
pub struct Recorder<T> {
    /// `127.0.0.1:PORT`.
    pub address: SocketAddr,
    records: Arc<Mutex<Vec<T>>>,
}

impl<T: Clone + Send + 'static> Recorder<T> {
    /// Listens on a free loopback port and runs `serve` on every connection in its own
    /// thread (the server lives as long as the process).
    pub fn start(
        serve: impl Fn(TcpStream, &Mutex<Vec<T>>) -> Result<()> + Send + Sync + 'static,
    ) -> Result<Recorder<T>> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?;
        let records = Arc::new(Mutex::new(Vec::new()));
        let shared = records.clone();
        let serve = Arc::new(serve);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = shared.clone();
                let serve = serve.clone();
                std::thread::spawn(move || {
                    let _ = serve(stream, &shared);
                });
            }
        });
        Ok(Recorder { address, records })
    }

    /// HTTP/1.1 on every connection: each request's path and body go through `record`
    /// (`None` keeps nothing) and get `200 OK` with `answer` (JSON when not empty).
    pub fn http(
        record: impl Fn(String, Vec<u8>) -> Option<T> + Send + Sync + 'static,
        answer: &'static [u8],
    ) -> Result<Recorder<T>> {
        Recorder::start(move |stream, records| {
            let mut reader = BufReader::new(stream.try_clone()?);
            while let Some((path, body)) = read_http_request_with_path(&mut reader)? {
                if let Some(kept) = record(path, body) {
                    records.lock().unwrap().push(kept);
                }
                let content_type = if answer.is_empty() {
                    ""
                } else {
                    "Content-Type: application/json\r\n"
                };
                let mut out = &stream;
                write!(
                    out,
                    "HTTP/1.1 200 OK\r\n{content_type}Content-Length: {}\r\n\r\n",
                    answer.len()
                )?;
                out.write_all(answer)?;
                out.flush()?;
            }
            Ok(())
        })
    }

    /// Everything recorded so far.
    pub fn records(&self) -> Vec<T> {
        self.records.lock().unwrap().clone()
    }

    /// Waits until `find` picks something out of the records; returns it.
    pub fn wait_for<R>(
        &self,
        timeout: Duration,
        mut find: impl FnMut(&[T]) -> Option<R>,
    ) -> Option<R> {
        let mut found = None;
        wait_until(timeout, || {
            found = find(&self.records());
            found.is_some()
        });
        found
    }
}
