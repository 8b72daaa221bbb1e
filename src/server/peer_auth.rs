//! Proof that a peer on the internal listener belongs to the cluster: a challenge-response
//! handshake over the shared `cluster.secret`, in both directions.
//!
//! The internal listener carries the metadata quorum's Raft traffic and followers' replica
//! fetches, both of which can rewrite the cluster's state; it accepts only peers that hold the
//! secret every broker of the cluster is configured with. After the connection's 4-byte magic
//! (which says what the connection will carry):
//!
//! ```text
//! acceptor  -> connector  server nonce (32 random bytes)
//! connector -> acceptor   client nonce (32 random bytes), client proof (32 bytes)
//! acceptor  -> connector  server proof (32 bytes)             (only if the client proof holds)
//! proof = HMAC-SHA256(secret, label || magic || server nonce || client nonce)
//! label = "gregor internal v1 client" | "gregor internal v1 server"
//! ```
//!
//! Fresh nonces on both sides keep a recorded exchange from being replayed; the labels keep
//! one side's proof from being reflected back as the other's; the magic binds the proof to
//! what the connection carries. Proofs are compared in constant time. The secret itself never
//! crosses the wire. This authenticates peers; it does not encrypt the traffic (TLS for the
//! internal listener comes with the security work). The handshake is generic over the stream,
//! so it runs the same over TLS later.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

type HmacSha256 = Hmac<Sha256>;

const NONCE_BYTES: usize = 32;
const PROOF_BYTES: usize = 32;
const CLIENT_LABEL: &[u8] = b"gregor internal v1 client";
const SERVER_LABEL: &[u8] = b"gregor internal v1 server";
/// How long either side waits for the other's half of the handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The peer's proof does not match: it does not hold this cluster's secret.
    #[error("the peer does not hold this cluster's cluster.secret")]
    BadProof,
    /// The connection failed or timed out mid-handshake.
    #[error("handshake: {0}")]
    Io(#[from] std::io::Error),
    /// No random bytes from the operating system, or no HMAC key.
    #[error("handshake setup: {0}")]
    Random(String),
}

/// The shared secret of a cluster (`cluster.secret`). Its `Debug` never shows it.
#[derive(Clone)]
pub struct ClusterSecret(std::sync::Arc<[u8]>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

impl ClusterSecret {
    /// The secret as configured.
    pub fn new(secret: &str) -> ClusterSecret {
        ClusterSecret(secret.as_bytes().into())
    }

    fn proof(
        &self,
        label: &[u8],
        magic: &[u8; 4],
        server: &[u8],
        client: &[u8],
    ) -> Result<HmacSha256, HandshakeError> {
        // HMAC takes keys of any length, so this does not fail in practice.
        let mut mac = HmacSha256::new_from_slice(&self.0)
            .map_err(|e| HandshakeError::Random(format!("HMAC key: {e}")))?;
        mac.update(label);
        mac.update(magic);
        mac.update(server);
        mac.update(client);
        Ok(mac)
    }
}

/// A fresh secret for a cluster: 32 random bytes as 64 hex digits.
pub fn generate_secret() -> Result<String, HandshakeError> {
    let bytes = nonce()?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn nonce() -> Result<[u8; NONCE_BYTES], HandshakeError> {
    let mut bytes = [0u8; NONCE_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| HandshakeError::Random(e.to_string()))?;
    Ok(bytes)
}

/// The acceptor's side, after it has read `magic`: challenges the peer and answers its proof.
pub async fn accept<S>(
    stream: &mut S,
    secret: &ClusterSecret,
    magic: &[u8; 4],
) -> Result<(), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let exchange = async {
        let server_nonce = nonce()?;
        stream.write_all(&server_nonce).await?;
        stream.flush().await?;
        let mut reply = [0u8; NONCE_BYTES + PROOF_BYTES];
        stream.read_exact(&mut reply).await?;
        let (client_nonce, client_proof) = reply.split_at(NONCE_BYTES);
        secret
            .proof(CLIENT_LABEL, magic, &server_nonce, client_nonce)?
            .verify_slice(client_proof)
            .map_err(|_| HandshakeError::BadProof)?;
        let server_proof = secret
            .proof(SERVER_LABEL, magic, &server_nonce, client_nonce)?
            .finalize()
            .into_bytes();
        stream.write_all(&server_proof).await?;
        stream.flush().await?;
        Ok(())
    };
    within_timeout(exchange).await
}

/// The connector's side, after it has written `magic`: answers the challenge and checks the
/// acceptor's proof (so a broker never replicates from, or votes with, an impostor).
pub async fn connect<S>(
    stream: &mut S,
    secret: &ClusterSecret,
    magic: &[u8; 4],
) -> Result<(), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let exchange = async {
        let mut server_nonce = [0u8; NONCE_BYTES];
        stream.read_exact(&mut server_nonce).await?;
        let client_nonce = nonce()?;
        let client_proof = secret
            .proof(CLIENT_LABEL, magic, &server_nonce, &client_nonce)?
            .finalize()
            .into_bytes();
        let mut reply = [0u8; NONCE_BYTES + PROOF_BYTES];
        reply[..NONCE_BYTES].copy_from_slice(&client_nonce);
        reply[NONCE_BYTES..].copy_from_slice(&client_proof);
        stream.write_all(&reply).await?;
        stream.flush().await?;
        let mut server_proof = [0u8; PROOF_BYTES];
        stream.read_exact(&mut server_proof).await?;
        secret
            .proof(SERVER_LABEL, magic, &server_nonce, &client_nonce)?
            .verify_slice(&server_proof)
            .map_err(|_| HandshakeError::BadProof)
    };
    within_timeout(exchange).await
}

async fn within_timeout(
    exchange: impl std::future::Future<Output = Result<(), HandshakeError>>,
) -> Result<(), HandshakeError> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange).await {
        Ok(result) => result,
        Err(_) => Err(HandshakeError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {HANDSHAKE_TIMEOUT:?}"),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAGIC: &[u8; 4] = b"TEST";

    async fn run(
        server: &str,
        client: &str,
    ) -> (Result<(), HandshakeError>, Result<(), HandshakeError>) {
        let (mut a, mut b) = tokio::io::duplex(1024);
        let server = ClusterSecret::new(server);
        let client = ClusterSecret::new(client);
        tokio::join!(
            async move { accept(&mut a, &server, MAGIC).await },
            async move { connect(&mut b, &client, MAGIC).await }
        )
    }

    #[tokio::test]
    async fn the_same_secret_passes_both_ways() {
        let (server, client) = run("s3cret-s3cret-s3cret", "s3cret-s3cret-s3cret").await;
        server.unwrap();
        client.unwrap();
    }

    #[tokio::test]
    async fn another_secret_is_refused() {
        let (server, client) = run("s3cret-s3cret-s3cret", "guess-guess-guess").await;
        assert!(matches!(server, Err(HandshakeError::BadProof)));
        // The acceptor closes without its proof: the connector fails too.
        assert!(client.is_err());
    }

    /// A client that replays a proof recorded from an earlier handshake fails: the server's
    /// nonce is fresh each time.
    #[tokio::test]
    async fn a_recorded_proof_does_not_replay() {
        let secret = ClusterSecret::new("s3cret-s3cret-s3cret");
        let server_nonce = [7u8; NONCE_BYTES];
        let client_nonce = [9u8; NONCE_BYTES];
        let recorded = secret
            .proof(CLIENT_LABEL, MAGIC, &server_nonce, &client_nonce)
            .unwrap()
            .finalize()
            .into_bytes();
        let (mut a, mut b) = tokio::io::duplex(1024);
        let replayer = async move {
            let mut fresh = [0u8; NONCE_BYTES];
            b.read_exact(&mut fresh).await.unwrap();
            assert_ne!(fresh, server_nonce);
            b.write_all(&client_nonce).await.unwrap();
            b.write_all(&recorded).await.unwrap();
        };
        let (accepted, ()) = tokio::join!(accept(&mut a, &secret, MAGIC), replayer);
        assert!(matches!(accepted, Err(HandshakeError::BadProof)));
    }

    #[test]
    fn generated_secrets_are_fresh_hex() {
        let a = generate_secret().unwrap();
        let b = generate_secret().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        assert_eq!(format!("{:?}", ClusterSecret::new(&a)), "ClusterSecret(..)");
    }
}
