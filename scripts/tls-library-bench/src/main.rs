//! `tls-library-bench LIBRARY ADDR CERT KEY`: answers every TLS connection's first request
//! with a short 200 and closes it, on one thread. LIBRARY is `openssl`, `rustls-aws-lc` or
//! `rustls-ring`. Used by scripts/tls-library-bench.sh to compare handshake costs.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n";

/// Reads one request head and answers it.
async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut s: S) {
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let _ = s.write_all(ANSWER).await;
    let _ = s.shutdown().await;
}

fn rustls_config(
    provider: rustls::crypto::CryptoProvider,
    cert: &str,
    key: &str,
) -> Arc<rustls::ServerConfig> {
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert).expect("cert"),
    ))
    .collect::<Result<Vec<_>, _>>()
    .expect("certs");
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key).expect("key"),
    ))
    .expect("key")
    .expect("a key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("config");
    Arc::new(config)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, library, addr, cert, key] = args.as_slice() else {
        eprintln!("usage: tls-library-bench openssl|rustls-aws-lc|rustls-ring ADDR CERT KEY");
        std::process::exit(2);
    };
    let listener = TcpListener::bind(addr).await.expect("bind");
    match library.as_str() {
        "openssl" => {
            let mut b = openssl::ssl::SslAcceptor::mozilla_intermediate_v5(
                openssl::ssl::SslMethod::tls_server(),
            )
            .expect("acceptor");
            b.set_certificate_chain_file(cert).expect("cert");
            b.set_private_key_file(key, openssl::ssl::SslFiletype::PEM)
                .expect("key");
            let acceptor = Arc::new(b.build());
            eprintln!("{}", openssl::version::version());
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(ssl) = openssl::ssl::Ssl::new(acceptor.context()) else {
                        return;
                    };
                    let Ok(mut tls) = tokio_openssl::SslStream::new(ssl, tcp) else {
                        return;
                    };
                    if std::pin::Pin::new(&mut tls).accept().await.is_ok() {
                        serve(tls).await;
                    }
                });
            }
        }
        "rustls-aws-lc" | "rustls-ring" => {
            let provider = if library == "rustls-ring" {
                rustls::crypto::ring::default_provider()
            } else {
                rustls::crypto::aws_lc_rs::default_provider()
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(rustls_config(provider, cert, key));
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        serve(tls).await;
                    }
                });
            }
        }
        other => {
            eprintln!("unknown library {other}");
            std::process::exit(2);
        }
    }
}
