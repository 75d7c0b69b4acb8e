//! TLS material: listener certificates (chosen by SNI among the listeners that
//! share a port) and client configs for https backends (rustls, ring provider).

use rustls::crypto::ring::default_provider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// Loads a PEM chain and key into a signing key. Errors: a readable message.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read certificate {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad PEM in {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("no certificate in {}", cert.display()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read private key {}: {e}", key.display()))?;
    let signing = default_provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| format!("unusable private key {}: {e}", key.display()))?;
    Ok(Arc::new(CertifiedKey::new(chain, signing)))
}

/// Picks a listener's certificate by SNI: exact host name, then wildcard, then
/// the basic listener's (or the first) certificate.
#[derive(Debug)]
pub struct SniResolver {
    /// (host pattern lowercase, key); `*.x` patterns are wildcards.
    pub by_name: Vec<(String, Arc<CertifiedKey>)>,
    /// Used when SNI is absent or matches nothing.
    pub fallback: Option<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(sni) = hello.server_name() {
            let sni = sni.to_ascii_lowercase();
            if let Some((_, k)) = self.by_name.iter().find(|(n, _)| *n == sni) {
                return Some(k.clone());
            }
            if let Some((_, k)) = self.by_name.iter().find(|(n, _)| {
                n.strip_prefix("*.").is_some_and(|s| {
                    sni.ends_with(s)
                        && sni.len() > s.len() + 1
                        && sni.as_bytes()[sni.len() - s.len() - 1] == b'.'
                })
            }) {
                return Some(k.clone());
            }
        }
        self.fallback.clone()
    }
}

/// A server config with ALPN `h2`, `http/1.1`, and stateless session
/// tickets for resumption.
///
/// Tickets: rustls's recommended `Ticketer` (ChaCha20-Poly1305, keys made at
/// random; a key makes tickets for 6 hours and reads them for 6 more, and
/// clients are told 12 hours), so a client's session travels in its ticket
/// and any number of clients can resume, as with nginx's and HAProxy's
/// default tickets. rustls's default instead keeps TLS 1.3 sessions in a
/// cache of 256 on the server: with more clients than that connecting (each
/// TLS 1.3 handshake is sent two tickets), their tickets were evicted before
/// use and every handshake was a full one (200 `wrk` connections, each a new
/// connection per request: 2,319 connections a second and twice the client's
/// CPU a connection, against nginx's 4,476; docs/benchmarks.md section 2).
///
/// Each config gets its own ticketer, as each had its own cache: a ticket
/// resumes only on the listener (and certificates) that issued it, and a
/// config reload, which may replace or remove certificates, ends every
/// session (rustls checks only the suite and the server name on
/// resumption, so a ticketer shared across listeners or reloads would let a
/// session outlive the certificate it was made with). Errors: no randomness
/// for the first key.
pub fn server_config(resolver: SniResolver) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: SERVER_SUITES.to_vec(),
        ..default_provider()
    };
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    cfg.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| e.to_string())?;
    cfg.ignore_client_order = true;
    Ok(Arc::new(cfg))
}

/// The cipher suites a client connection may use, in the gateway's order of
/// preference, which it follows rather than the client's
/// (`ignore_client_order`; an Application Gateway TLS policy sets the order
/// too): AES-128-GCM first, TLS 1.3's mandatory suite (RFC 8446 §9.1), which
/// BoringSSL (Envoy's TLS library) also prefers on processors with AES
/// instructions; then AES-256-GCM, then
/// ChaCha20-Poly1305. rustls's *ring* provider lists AES-256-GCM first and
/// follows the client, and clients built on OpenSSL (curl, wrk, Python) ask
/// for AES-256-GCM with SHA-384 first. SHA-256 runs on the processor's SHA
/// instructions where it has them, SHA-384 in *ring*'s portable code on AMD
/// processors (docs/benchmarks.md section 2); AES-128 takes 10 rounds a block
/// where AES-256 takes 14.
static SERVER_SUITES: [rustls::SupportedCipherSuite; 9] = {
    use rustls::crypto::ring::cipher_suite as cs;
    [
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ]
};

/// A client config for an https backend: roots from `trusted` PEM files, or the
/// system's roots when empty. ALPN `http/1.1`.
pub fn client_config(trusted: &[std::path::PathBuf]) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    if trusted.is_empty() {
        let found = rustls_native_certs::load_native_certs();
        for c in found.certs {
            let _ = roots.add(c);
        }
    } else {
        for f in trusted {
            for c in CertificateDer::pem_file_iter(f)
                .map_err(|e| format!("cannot read {}: {e}", f.display()))?
            {
                let c = c.map_err(|e| format!("bad PEM in {}: {e}", f.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("unusable root in {}: {e}", f.display()))?;
            }
        }
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
