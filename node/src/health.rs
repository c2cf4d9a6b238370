//! The plain health endpoint for probes: `grpc.health.v1.Health` over plain HTTP/2 (no
//! TLS) on its own address, `node.health_listen`, off unless configured.
//!
//! The peer API serves the same health service, but behind mutual TLS, which a
//! Kubernetes `grpc:` probe, a container HEALTHCHECK or a load balancer cannot present.
//! This listener answers only health checks: no data, no identity, nothing else.
//! [`check`] is the client side (`liutong health`).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::{Endpoint, Server};
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// The service name probes may ask about besides the empty (whole-server) name.
pub const NODE_SERVICE: &str = "liutong.v1.Node";

/// Serves health checks on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<Result<(), tonic::transport::Error>> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(NODE_SERVICE, ServingStatus::Serving)
        .await;
    tokio::spawn(
        Server::builder()
            .add_service(health)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            ),
    )
}

/// Asks the health endpoint at `addr` once; the answer's status, or why there is none.
pub async fn check(addr: SocketAddr, timeout: Duration) -> Result<ServingStatus, String> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(timeout)
        .timeout(timeout);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {addr}: {}", crate::tls::error_chain(&e)))?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    Ok(match answer.status {
        1 => ServingStatus::Serving,
        2 => ServingStatus::NotServing,
        _ => ServingStatus::Unknown,
    })
}
