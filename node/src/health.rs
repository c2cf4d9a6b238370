//! The node's serving status, and the plain health endpoint for probes.
//!
//! [`NodeHealth`] is the one source of the status: the peer API's
//! `grpc.health.v1.Health` (behind mutual TLS) and the plain endpoint both answer from
//! it, so they cannot disagree.
//!
//! The plain endpoint serves `grpc.health.v1.Health` over plain HTTP/2 (no TLS) on its
//! own address, `node.health_listen`, off unless configured: a Kubernetes `grpc:`
//! probe, a container HEALTHCHECK or a load balancer cannot present a data-space
//! certificate. It answers only health checks: no data, no identity, nothing else.
//! [`check`] is the client side (`liutong health`).

use std::net::SocketAddr;
use std::time::Duration;

use crate::base::shutdown::Shutdown;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::transport::{Endpoint, Server};
use tonic_health::ServingStatus;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

/// The service name probes may ask about besides the empty (whole-server) name.
pub const NODE_SERVICE: &str = liutong_proto::v1::node_server::SERVICE_NAME;

/// The node's serving status, for the whole server (the empty service name) and for
/// [`NODE_SERVICE`]. Clones share it.
#[derive(Clone, Debug)]
pub struct NodeHealth(HealthReporter);

impl NodeHealth {
    /// The status of a node that serves.
    pub async fn serving() -> Self {
        // A new reporter already says SERVING for the whole server.
        let health = Self(HealthReporter::new());
        health
            .0
            .set_service_status(NODE_SERVICE, ServingStatus::Serving)
            .await;
        health
    }

    /// Sets the status of the whole server and of [`NODE_SERVICE`], for every health
    /// service answering from this one.
    pub async fn set(&self, status: ServingStatus) {
        for name in ["", NODE_SERVICE] {
            self.0.set_service_status(name, status).await;
        }
    }

    /// A `grpc.health.v1.Health` service answering from this status.
    pub fn service(&self) -> HealthServer<HealthService> {
        HealthServer::new(HealthService::from_health_reporter(self.0.clone()))
    }
}

/// Serves health checks from `health` on `listener` until the shutdown signal.
pub fn serve(
    listener: TcpListener,
    health: &NodeHealth,
    mut shutdown: Shutdown,
) -> JoinHandle<Result<(), tonic::transport::Error>> {
    tokio::spawn(
        Server::builder()
            .add_service(health.service())
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async move { shutdown.fired().await },
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Two health services made from one [`NodeHealth`] (as the peer API and the plain
    /// endpoint are) answer the same status, before and after it changes.
    #[tokio::test]
    async fn every_health_service_answers_from_the_one_status() {
        let health = NodeHealth::serving().await;
        let (_stop_tx, stop) = crate::base::shutdown::channel();
        let mut addrs = Vec::new();
        for _ in 0..2 {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addrs.push(listener.local_addr().unwrap());
            serve(listener, &health, stop.clone());
        }
        for addr in &addrs {
            assert_eq!(
                check(*addr, Duration::from_secs(5)).await,
                Ok(ServingStatus::Serving)
            );
        }
        health.set(ServingStatus::NotServing).await;
        for addr in &addrs {
            assert_eq!(
                check(*addr, Duration::from_secs(5)).await,
                Ok(ServingStatus::NotServing)
            );
        }
    }
}
