//! A TCP proxy on loopback that can be frozen: its connections stay open but carry nothing
//! (a network partition as a client sees it: no reset, no answer), until it is thawed.
//! Put in front of an API server for one client (a manager's kubeconfig pointing at it),
//! it cuts that client off alone. TLS goes through untouched: the API server's certificate
//! names 127.0.0.1, whatever the port.

use std::{io, net::SocketAddr};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::{JoinHandle, JoinSet},
};

pub struct Proxy {
    port: u16,
    frozen: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to `target`.
    pub async fn start(target: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (frozen, watching) = watch::channel(false);
        let task = tokio::spawn(async move {
            // Dropped with the task: every connection's forwarding ends with the proxy.
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let frozen = watching.clone();
                connections.spawn(forward(client, target, frozen));
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(Self { port, frozen, task })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// From now on nothing goes through, either way, on any connection (bytes read are held).
    pub fn freeze(&self) {
        let _ = self.frozen.send(true);
    }

    /// Everything held goes through, and so does what follows.
    pub fn thaw(&self) {
        let _ = self.frozen.send(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(client: TcpStream, target: SocketAddr, mut frozen: watch::Receiver<bool>) {
    // A connection made while frozen waits too (as a SYN into a partition would).
    if frozen.wait_for(|f| !*f).await.is_err() {
        return;
    }
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        () = pump(client_read, server_write, frozen.clone()) => {}
        () = pump(server_read, client_write, frozen) => {}
    }
}

/// Copies `from` to `to`, holding each chunk while the proxy is frozen.
async fn pump(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_frozen_proxy_holds_every_byte_until_thawed() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let proxy = Proxy::start(target).await.unwrap();
        let mut conn = TcpStream::connect(("127.0.0.1", proxy.port()))
            .await
            .unwrap();
        let mut got = [0u8; 5];
        conn.write_all(b"hello").await.unwrap();
        conn.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");

        proxy.freeze();
        conn.write_all(b"again").await.unwrap();
        let held =
            tokio::time::timeout(Duration::from_millis(300), conn.read_exact(&mut got)).await;
        assert!(held.is_err(), "a byte went through a frozen proxy");
        proxy.thaw();
        tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got, b"again");
    }
}
