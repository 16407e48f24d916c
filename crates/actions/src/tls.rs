//! TLS client settings shared by every action that speaks TLS (syslog over TLS as in
//! RFC 5425, webhook, email).
//!
//! rustls with the `ring` provider (pure Rust + assembly, builds for Windows with MinGW;
//! no OpenSSL). Trust comes from the operating system's store (the Windows certificate
//! store, `/etc/ssl/certs` on Linux) unless `ca_file` names the CAs to trust instead.
//! A client certificate (`cert_file` + `key_file`, PEM) is offered when configured (RFC
//! 5425 receivers often want one). `verify = false` turns verification off; `check-config`
//! warns about it.
//!
//! Configuration: a `tls` table inside the action, e.g.
//! `tls = { ca_file = "/etc/watchpost/siem-ca.pem", server_name = "siem.example" }`.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::Deserialize;
use toml::Spanned;
use watchpost_event::ConfigError;

/// The `tls` table of an action, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    ca_file: Option<Spanned<String>>,
    cert_file: Option<Spanned<String>>,
    key_file: Option<Spanned<String>>,
    verify: Option<Spanned<bool>>,
    server_name: Option<Spanned<String>>,
}

/// A configured path and where it was written.
type PathAt = (PathBuf, Range<usize>);

/// Validated TLS settings of one action.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsSpec {
    ca_file: Option<PathAt>,
    /// Certificate chain and private key.
    client: Option<(PathAt, PathAt)>,
    verify: bool,
    verify_span: Option<Range<usize>>,
    server_name: Option<String>,
}

impl TlsSpec {
    /// Settings with the defaults: the system's trust store, verification on.
    pub(crate) fn system() -> TlsSpec {
        TlsSpec {
            verify: true,
            ..TlsSpec::default()
        }
    }

    /// Validates a `tls` table.
    pub(crate) fn parse(raw: &RawTls, errors: &mut Vec<ConfigError>) -> TlsSpec {
        let path = |s: &Spanned<String>, errors: &mut Vec<ConfigError>| {
            if s.get_ref().trim().is_empty() {
                errors.push(ConfigError::new(s.span(), "the path is empty"));
            }
            (PathBuf::from(s.get_ref()), s.span())
        };
        let ca_file = raw.ca_file.as_ref().map(|s| path(s, errors));
        let client = match (&raw.cert_file, &raw.key_file) {
            (Some(c), Some(k)) => Some((path(c, errors), path(k, errors))),
            (Some(c), None) => {
                errors.push(ConfigError::new(c.span(), "`cert_file` needs `key_file`"));
                None
            }
            (None, Some(k)) => {
                errors.push(ConfigError::new(k.span(), "`key_file` needs `cert_file`"));
                None
            }
            (None, None) => None,
        };
        let server_name = raw.server_name.as_ref().and_then(|s| {
            match ServerName::try_from(s.get_ref().as_str()) {
                Ok(_) => Some(s.get_ref().clone()),
                Err(_) => {
                    errors.push(ConfigError::new(
                        s.span(),
                        "`server_name` is not a valid DNS name or IP address",
                    ));
                    None
                }
            }
        });
        TlsSpec {
            ca_file,
            client,
            verify: raw.verify.as_ref().is_none_or(|v| *v.get_ref()),
            verify_span: raw.verify.as_ref().map(|v| v.span()),
            server_name,
        }
    }

    /// The name to verify the peer's certificate against: `server_name`, else `host`.
    pub(crate) fn server_name(&self, host: &str) -> Result<ServerName<'static>, String> {
        let name = self.server_name.as_deref().unwrap_or(host);
        let name = name.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(name.to_owned())
            .map_err(|_| format!("`{name}` is not a valid TLS server name"))
    }

    /// Checks that look at the file system (for `check-config`): the files can be read
    /// and hold what they should; `verify = false` is a warning.
    pub(crate) fn check(&self) -> Vec<ConfigError> {
        let mut out = Vec::new();
        if let Some((p, span)) = &self.ca_file
            && let Err(e) = load_roots(p)
        {
            out.push(ConfigError::new(span.clone(), e));
        }
        if let Some(((c, cs), (k, ks))) = &self.client {
            if let Err(e) = load_certs(c) {
                out.push(ConfigError::new(cs.clone(), e));
            }
            if let Err(e) = load_key(k) {
                out.push(ConfigError::new(ks.clone(), e));
            }
        }
        if !self.verify
            && let Some(span) = &self.verify_span
        {
            out.push(ConfigError::warning(
                span.clone(),
                "`verify = false`: the peer's certificate is not checked, anyone on the path \
                 can read and change what is sent",
            ));
        }
        out
    }

    /// Builds the rustls client configuration (reads the files now: call it when a
    /// worker starts or reconnects, so renewed certificates are picked up).
    pub(crate) fn client_config(&self) -> Result<Arc<ClientConfig>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?;
        let builder = if !self.verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
        } else {
            let roots = match &self.ca_file {
                Some((p, _)) => load_roots(p)?,
                None => system_roots()?,
            };
            builder.with_root_certificates(roots)
        };
        let config = match &self.client {
            Some(((c, _), (k, _))) => builder
                .with_client_auth_cert(load_certs(c)?, load_key(k)?)
                .map_err(|e| format!("client certificate {}: {e}", c.display()))?,
            None => builder.with_no_client_auth(),
        };
        Ok(Arc::new(config))
    }
}

/// A client configuration trusting the CAs in `ca_file` (PEM), else the system's store,
/// verifying the server (the fleet client's settings).
pub(crate) fn client_config_for(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    TlsSpec {
        ca_file: ca_file.map(|p| (p.to_path_buf(), 0..0)),
        ..TlsSpec::system()
    }
    .client_config()
}

/// The operating system's trust anchors; certificates it cannot parse are skipped.
fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_owned(), |e| e.to_string());
        return Err(format!(
            "no trusted CA certificates in the system store ({why}); set `tls.ca_file`"
        ));
    }
    Ok(roots)
}

fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
    }
    Ok(roots)
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: bad PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("{}: no usable PEM private key: {e}", path.display()))
}

/// `verify = false`: accepts any certificate, still checks the handshake signatures.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (TlsSpec, Vec<ConfigError>) {
        let raw: RawTls = toml::from_str(text).unwrap();
        let mut errors = Vec::new();
        let spec = TlsSpec::parse(&raw, &mut errors);
        (spec, errors)
    }

    #[test]
    fn partner_keys_and_names_are_checked() {
        let (_, e) = parse(r#"cert_file = "/c.pem""#);
        assert!(e[0].message.contains("needs `key_file`"), "{e:?}");
        let (_, e) = parse(r#"server_name = "not a name""#);
        assert!(e[0].message.contains("server_name"), "{e:?}");
        let (s, e) = parse(r#"server_name = "siem.example""#);
        assert!(e.is_empty());
        assert_eq!(
            s.server_name("10.0.0.1").unwrap(),
            ServerName::try_from("siem.example").unwrap()
        );
        assert!(TlsSpec::system().server_name("[::1]").is_ok());
    }

    #[test]
    fn missing_files_and_verify_off_are_reported() {
        let (s, e) = parse(
            r#"ca_file = "/nonexistent/ca.pem"
verify = false"#,
        );
        assert!(e.is_empty());
        let found = s.check();
        assert!(
            found
                .iter()
                .any(|e| e.message.contains("cannot read /nonexistent/ca.pem"))
        );
        assert!(
            found
                .iter()
                .any(|e| e.warning && e.message.contains("verify = false"))
        );
        assert!(s.client_config().is_ok(), "verify = false needs no CA");
        let (s, _) = parse(r#"ca_file = "/nonexistent/ca.pem""#);
        assert!(
            s.client_config()
                .unwrap_err()
                .contains("/nonexistent/ca.pem")
        );
    }
}
