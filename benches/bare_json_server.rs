//! The ceiling for the metadata benchmark: a bare hyper + rustls server answering one constant
//! JSON body, with the same TLS configuration as ours and nothing else (no routing, limits,
//! timeouts or cache). `benches/metadata_bench.sh` runs it beside our server and nginx so a
//! run shows how much of the gap to the ceiling is ours.
//!
//!   bare_json_server CERT KEY BODY_FILE ADDR    (prints "listening ADDR" once bound)

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` runs every bench target with `--bench`: nothing to do then.
    if args.len() != 4 {
        eprintln!("usage: bare_json_server CERT KEY BODY_FILE ADDR");
        return;
    }
    let mut config = odtr::tls::load_server_config(args[0].as_ref(), args[1].as_ref())
        .unwrap_or_else(|e| panic!("TLS: {e}"));
    // HTTP/1.1 only (wrk's protocol); offering h2 would send curl's readiness probe there.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let body = Bytes::from(std::fs::read(&args[2]).unwrap_or_else(|e| panic!("{}: {e}", args[2])));
    let addr = args[3].clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
        println!("listening {}", listener.local_addr().expect("address"));
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, body) = (acceptor.clone(), body.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = service_fn(move |_req| {
                    let body = body.clone();
                    async move {
                        Ok::<_, Infallible>(
                            hyper::Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(body))
                                .expect("response"),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
}
