//! Registry hosts configured as containerd configures them: a directory (`certs.d`) with one
//! subdirectory per registry holding a `hosts.toml`, or Docker's legacy certificate files.
//!
//! ```text
//! <dir>/<host>_<port>_/ or <dir>/<host>:<port>/ or <dir>/<host>/ or <dir>/_default/
//!     hosts.toml         server = "https://registry.example"
//!                        ca = "ca.pem"                # or a list; relative to this directory
//!                        [host."https://mirror.example"]
//!                          capabilities = ["pull", "resolve"]
//!                          skip_verify = true
//!     ca.crt, *.crt      (without hosts.toml) CA certificates for https://<host>
//!     client.cert/.key   (without hosts.toml) a client certificate and its key
//! ```
//!
//! The first directory that exists is used, as containerd does. Mirrors (`[host."..."]`, in
//! file order) come first and the server last; a pull falls back to the next host when one
//! fails. The directory is read at each pull, so edits apply without a restart.

use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;

use super::reference::{Reference, DOCKER_HUB};
use super::ImageError;

const HOSTS_FILE: &str = "hosts.toml";
const DEFAULT_DIR: &str = "_default";
/// Go's `time.Duration` is an i64 of nanoseconds: longer is a parse error in containerd.
const GO_MAX_DURATION: Duration = Duration::from_nanos(i64::MAX as u64);

/// What a host may be asked for: `resolve` is a tag to a digest, `pull` is anything by digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    pub pull: bool,
    pub resolve: bool,
}

impl Capabilities {
    const ALL: Capabilities = Capabilities { pull: true, resolve: true };
}

/// A client certificate: the certificate file and its key (`None`: the key is in the same file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: Option<PathBuf>,
}

/// One host to ask for an image's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegistryHost {
    /// Where the API lives: `<scheme>://<host>[:port]<path>`; `/v2` is added unless
    /// `override_path`.
    pub url: Url,
    pub override_path: bool,
    pub capabilities: Capabilities,
    /// CA certificate files (PEM) trusted besides the system's.
    pub ca: Vec<PathBuf>,
    pub client: Option<ClientCert>,
    pub skip_verify: bool,
    /// Extra headers sent with every request.
    pub headers: Vec<(String, String)>,
    /// `dial_timeout`: how long to wait for a connection (the client's default when unset).
    pub dial_timeout: Option<Duration>,
    /// A mirror (not the registry the image is named after): gets the `ns` query parameter,
    /// and its failures fall back to the next host.
    pub mirror: bool,
    /// The file or directory this came from, for error messages.
    pub origin: PathBuf,
}

impl RegistryHost {
    /// The registry itself, with nodelet's defaults: HTTPS (Docker Hub's API host for
    /// docker.io), plain HTTP only on loopback.
    pub fn default_for(reference: &Reference) -> RegistryHost {
        let url = Url::parse(&reference.api_base()).expect("api_base is a valid URL");
        RegistryHost::plain(url, PathBuf::new())
    }

    fn plain(url: Url, origin: PathBuf) -> RegistryHost {
        RegistryHost {
            url,
            override_path: false,
            capabilities: Capabilities::ALL,
            ca: Vec::new(),
            client: None,
            skip_verify: false,
            headers: Vec::new(),
            dial_timeout: None,
            mirror: false,
            origin,
        }
    }

    /// The API base URL, without a trailing slash: `https://host/v2`, or the configured
    /// path as is with `override_path`.
    pub fn api_base(&self) -> String {
        let base = self.url.as_str().trim_end_matches('/');
        if self.override_path {
            base.to_string()
        } else {
            format!("{base}/v2")
        }
    }

    /// `host[:port]` of the URL, as credentials are keyed.
    pub fn authority(&self) -> String {
        let host = self.url.host_str().unwrap_or_default();
        match self.url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        }
    }
}

/// The hosts to try for `reference`, mirrors first: from `<dir>/<registry>` when configured,
/// else the registry alone with the defaults. `dir` itself may be missing.
pub fn hosts_for(dir: Option<&Path>, reference: &Reference) -> Result<Vec<RegistryHost>, ImageError> {
    let Some(host_dir) = dir.and_then(|dir| host_dir(dir, &reference.registry)) else {
        return Ok(vec![RegistryHost::default_for(reference)]);
    };
    let file = host_dir.join(HOSTS_FILE);
    match std::fs::read_to_string(&file) {
        Ok(text) if !text.trim().is_empty() => {
            tracing::debug!(path = %file.display(), "registry hosts");
            parse_hosts_toml(&text, &file, &host_dir, reference)
        }
        Ok(_) => legacy_files(&host_dir, reference),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => legacy_files(&host_dir, reference),
        Err(e) => Err(ImageError::io("read", file)(e)),
    }
}

/// containerd's lookup: `host_port_` (a port's `:` is not allowed in some file systems),
/// `host:port`, then `_default`.
fn host_dir(dir: &Path, registry: &str) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let Some((host, port)) = registry.rsplit_once(':').filter(|(_, port)| !port.contains(']')) {
        candidates.push(dir.join(format!("{host}_{port}_")));
    }
    candidates.push(dir.join(registry));
    candidates.push(dir.join(DEFAULT_DIR));
    candidates.into_iter().find(|candidate| candidate.is_dir())
}

/// The server's URL when hosts.toml names none: `https://<registry>` (Docker Hub's API host
/// for docker.io), as containerd.
fn default_server(reference: &Reference) -> Url {
    let host = if reference.registry == DOCKER_HUB { "registry-1.docker.io" } else { &reference.registry };
    Url::parse(&format!("https://{host}")).expect("a validated registry host makes a valid URL")
}

/// Docker's `certs.d/<host>/` files: `*.crt` are CAs, `<name>.cert` with `<name>.key` a
/// client certificate; they configure `https://<host>`. A directory without any is ignored.
fn legacy_files(host_dir: &Path, reference: &Reference) -> Result<Vec<RegistryHost>, ImageError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(host_dir).map_err(ImageError::io("list", host_dir))? {
        let entry = entry.map_err(ImageError::io("list", host_dir))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    let ca: Vec<PathBuf> = names.iter().filter(|n| n.ends_with(".crt")).map(|n| host_dir.join(n)).collect();
    let mut clients = Vec::new();
    for cert in names.iter().filter(|n| n.ends_with(".cert")) {
        let key = format!("{}.key", cert.trim_end_matches(".cert"));
        if !names.contains(&key) {
            return Err(hosts_error(host_dir, cert, format!("client certificate without its key {key}")));
        }
        clients.push(ClientCert { cert: host_dir.join(cert), key: Some(host_dir.join(key)) });
    }
    if ca.is_empty() && clients.is_empty() {
        return Ok(vec![RegistryHost::default_for(reference)]);
    }
    if clients.len() > 1 {
        return Err(hosts_error(host_dir, "*.cert", "more than one client certificate; keep one".to_string()));
    }
    let mut host = RegistryHost::plain(default_server(reference), host_dir.to_path_buf());
    host.ca = ca;
    host.client = clients.pop();
    Ok(vec![host])
}

fn hosts_error(path: &Path, field: &str, reason: String) -> ImageError {
    ImageError::HostsConfig { path: path.to_path_buf(), field: field.to_string(), reason }
}

/// Parse a hosts.toml; `file` names it in errors, relative paths are taken from `host_dir`.
pub fn parse_hosts_toml(
    text: &str,
    file: &Path,
    host_dir: &Path,
    reference: &Reference,
) -> Result<Vec<RegistryHost>, ImageError> {
    let table: toml::Table =
        text.parse().map_err(|e: toml::de::Error| hosts_error(file, "(syntax)", e.to_string().trim().to_string()))?;
    let fields = Fields { file, host_dir };
    let mut hosts = Vec::new();
    let mut server = None;
    let mut server_settings = toml::Table::new();
    for (key, value) in &table {
        match key.as_str() {
            "server" => server = Some(fields.url("server", value)?),
            "host" => {
                let toml::Value::Table(mirrors) = value else {
                    return Err(fields.error("host", "must be a table of [host.\"<url>\"] sections"));
                };
                for (url, settings) in mirrors {
                    let field = format!("host.{url:?}");
                    let toml::Value::Table(settings) = settings else {
                        return Err(fields.error(&field, "must be a table"));
                    };
                    let mut host =
                        RegistryHost::plain(fields.url(&field, &toml::Value::String(url.clone()))?, file.into());
                    host.mirror = true;
                    fields.apply(&field, settings, &mut host)?;
                    hosts.push(host);
                }
            }
            _ => {
                server_settings.insert(key.clone(), value.clone());
            }
        }
    }
    let mut upstream = RegistryHost::plain(server.unwrap_or_else(|| default_server(reference)), file.into());
    fields.apply("", &server_settings, &mut upstream)?;
    hosts.push(upstream);
    Ok(hosts)
}

/// Reads the typed fields of one hosts.toml section, naming `file` and the field on error.
struct Fields<'a> {
    file: &'a Path,
    host_dir: &'a Path,
}

impl Fields<'_> {
    fn error(&self, field: &str, reason: &str) -> ImageError {
        hosts_error(self.file, field, reason.to_string())
    }

    /// The settings of a section (`prefix` "" for the server's top-level keys).
    fn apply(&self, prefix: &str, settings: &toml::Table, host: &mut RegistryHost) -> Result<(), ImageError> {
        for (key, value) in settings {
            let field = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
            match key.as_str() {
                "capabilities" => host.capabilities = self.capabilities(&field, value)?,
                "ca" => host.ca = self.strings(&field, value)?.iter().map(|p| self.path(p)).collect(),
                "client" => host.client = self.client(&field, value)?,
                "skip_verify" => host.skip_verify = self.boolean(&field, value)?,
                "override_path" => host.override_path = self.boolean(&field, value)?,
                "header" => host.headers = self.headers(&field, value)?,
                "dial_timeout" => host.dial_timeout = Some(self.duration(&field, value)?),
                _ => tracing::warn!(path = %self.file.display(), field, "unsupported registry host setting ignored"),
            }
        }
        Ok(())
    }

    fn url(&self, field: &str, value: &toml::Value) -> Result<Url, ImageError> {
        let text = value.as_str().ok_or_else(|| self.error(field, "must be a URL string"))?;
        // containerd takes a host without a scheme as HTTPS.
        let full = if text.contains("://") { text.to_string() } else { format!("https://{text}") };
        let url = Url::parse(&full).map_err(|e| self.error(field, &format!("bad URL {text:?}: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(self.error(field, &format!("{text:?} must be an http:// or https:// URL with a host")));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(self.error(field, &format!("{text:?} must not have a query or fragment")));
        }
        Ok(url)
    }

    fn boolean(&self, field: &str, value: &toml::Value) -> Result<bool, ImageError> {
        value.as_bool().ok_or_else(|| self.error(field, &format!("must be true or false, not {value}")))
    }

    /// A Go duration as containerd reads it (`time.ParseDuration`): `"500ms"`, `"10s"`,
    /// `"1m30s"`, `"1.5h"`; over Go's limit (about 292 years) is an error, as in Go.
    fn duration(&self, field: &str, value: &toml::Value) -> Result<Duration, ImageError> {
        let bad = || self.error(field, &format!("must be a duration such as \"10s\" or \"500ms\", not {value}"));
        let text = value.as_str().ok_or_else(bad)?;
        let out_of_range = || self.error(field, &format!("{text:?} is out of range (at most {GO_MAX_DURATION:?})"));
        let mut rest = text;
        let mut total = Duration::ZERO;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').ok_or_else(bad)?;
            let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
            let unit_end = rest[digits..].find(|c: char| c.is_ascii_digit()).map_or(rest.len(), |i| digits + i);
            let seconds = match &rest[digits..unit_end] {
                "ns" => 1e-9,
                "us" | "\u{b5}s" | "\u{3bc}s" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(bad()),
            };
            let term = Duration::try_from_secs_f64(number * seconds).map_err(|_| out_of_range())?;
            total = total.checked_add(term).filter(|t| *t <= GO_MAX_DURATION).ok_or_else(out_of_range)?;
            rest = &rest[unit_end..];
        }
        if total.is_zero() {
            return Err(bad());
        }
        Ok(total)
    }

    /// A string or a list of strings.
    fn strings(&self, field: &str, value: &toml::Value) -> Result<Vec<String>, ImageError> {
        let bad = || self.error(field, &format!("must be a string or a list of strings, not {value}"));
        match value {
            toml::Value::String(text) => Ok(vec![text.clone()]),
            toml::Value::Array(items) => {
                items.iter().map(|item| item.as_str().map(str::to_string).ok_or_else(bad)).collect()
            }
            _ => Err(bad()),
        }
    }

    fn path(&self, text: &str) -> PathBuf {
        let path = Path::new(text);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.host_dir.join(path)
        }
    }

    fn capabilities(&self, field: &str, value: &toml::Value) -> Result<Capabilities, ImageError> {
        let mut capabilities = Capabilities { pull: false, resolve: false };
        for name in self.strings(field, value)? {
            match name.as_str() {
                "pull" => capabilities.pull = true,
                "resolve" => capabilities.resolve = true,
                "push" => {}
                other => return Err(self.error(field, &format!("unknown capability {other:?} (pull, resolve, push)"))),
            }
        }
        Ok(capabilities)
    }

    /// `"both.pem"`, `["both.pem"]` or `[["cert.pem", "key.pem"]]`: one client certificate.
    fn client(&self, field: &str, value: &toml::Value) -> Result<Option<ClientCert>, ImageError> {
        let bad = || self.error(field, "must be a file, or a list of one file or one [cert, key] pair");
        let items = match value {
            toml::Value::String(_) => vec![value.clone()],
            toml::Value::Array(items) => items.clone(),
            _ => return Err(bad()),
        };
        if items.len() > 1 {
            return Err(self.error(field, "more than one client certificate; nodelet uses one per host"));
        }
        let Some(item) = items.first() else { return Ok(None) };
        match item {
            toml::Value::String(both) => Ok(Some(ClientCert { cert: self.path(both), key: None })),
            toml::Value::Array(pair) => match pair.as_slice() {
                [toml::Value::String(cert), toml::Value::String(key)] => {
                    Ok(Some(ClientCert { cert: self.path(cert), key: Some(self.path(key)) }))
                }
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }

    fn headers(&self, field: &str, value: &toml::Value) -> Result<Vec<(String, String)>, ImageError> {
        let toml::Value::Table(table) = value else {
            return Err(self.error(field, "must be a table of header names"));
        };
        let mut headers = Vec::new();
        for (name, values) in table {
            let name_ok = reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_ok();
            if !name_ok {
                return Err(self.error(&format!("{field}.{name}"), "is not a valid header name"));
            }
            for value in self.strings(&format!("{field}.{name}"), values)? {
                if reqwest::header::HeaderValue::from_str(&value).is_err() {
                    return Err(self.error(&format!("{field}.{name}"), "is not a valid header value"));
                }
                headers.push((name.clone(), value));
            }
        }
        Ok(headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, registry: &str) -> Result<Vec<RegistryHost>, ImageError> {
        let reference = Reference::parse(&format!("{registry}/app:1")).unwrap();
        parse_hosts_toml(
            text,
            Path::new("/etc/nodelet/certs.d/x/hosts.toml"),
            Path::new("/etc/nodelet/certs.d/x"),
            &reference,
        )
    }

    #[test]
    fn mirrors_in_file_order_then_the_server() {
        let hosts = parse(
            r#"
            server = "https://registry.example"
            ca = "upstream-ca.pem"
            [host."https://b-mirror.example"]
              capabilities = ["pull", "resolve"]
              ca = ["/abs/one.pem", "two.pem"]
              client = [["c.pem", "k.pem"]]
            [host."http://a-mirror.example:5000/prefix"]
              capabilities = ["pull"]
              skip_verify = true
              override_path = true
              dial_timeout = "1m500ms"
              [host."http://a-mirror.example:5000/prefix".header]
                x-token = ["a", "b"]
            "#,
            "registry.example",
        )
        .unwrap();
        let urls: Vec<String> = hosts.iter().map(|h| h.api_base()).collect();
        assert_eq!(
            urls,
            ["https://b-mirror.example/v2", "http://a-mirror.example:5000/prefix", "https://registry.example/v2"]
        );
        assert!(hosts[0].mirror && hosts[1].mirror && !hosts[2].mirror);
        assert_eq!(hosts[0].ca, [PathBuf::from("/abs/one.pem"), PathBuf::from("/etc/nodelet/certs.d/x/two.pem")]);
        assert_eq!(
            hosts[0].client,
            Some(ClientCert {
                cert: "/etc/nodelet/certs.d/x/c.pem".into(),
                key: Some("/etc/nodelet/certs.d/x/k.pem".into())
            })
        );
        assert_eq!(hosts[1].capabilities, Capabilities { pull: true, resolve: false });
        assert!(hosts[1].skip_verify);
        assert_eq!(hosts[1].dial_timeout, Some(Duration::from_millis(60_500)));
        assert_eq!(
            hosts[1].headers,
            [("x-token".to_string(), "a".to_string()), ("x-token".to_string(), "b".to_string())]
        );
        assert_eq!(hosts[1].authority(), "a-mirror.example:5000");
        assert_eq!(hosts[2].ca, [PathBuf::from("/etc/nodelet/certs.d/x/upstream-ca.pem")]);
        assert_eq!(hosts[2].capabilities, Capabilities::ALL);
    }

    #[test]
    fn durations_as_go_parses_them() {
        let timeout = |text: &str| parse(&format!("dial_timeout = {text:?}"), "r.example").unwrap()[0].dial_timeout;
        assert_eq!(timeout("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(timeout("1m30s250ms"), Some(Duration::from_millis(90_250)));
        assert_eq!(timeout("300us"), Some(Duration::from_micros(300)));
        assert_eq!(timeout("2\u{b5}s"), Some(Duration::from_micros(2)));
        assert_eq!(timeout("2562047h"), Some(Duration::from_secs(2_562_047 * 3600)), "under Go's limit");
        let error = parse("dial_timeout = \"99999999999999999999h\"", "r.example").unwrap_err().to_string();
        assert!(error.contains("out of range"), "{error}");
    }

    #[test]
    fn server_defaults_as_containerd() {
        let hosts = parse("[host.\"mirror.example\"]\n", "docker.io").unwrap();
        assert_eq!(hosts[0].api_base(), "https://mirror.example/v2", "a host without scheme is https");
        assert_eq!(hosts[1].api_base(), "https://registry-1.docker.io/v2");
        let hosts = parse("server = \"http://127.0.0.1:5000\"", "registry.example:5000").unwrap();
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].api_base(), "http://127.0.0.1:5000/v2");
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let cases = [
            ("skip_verify = \"yes\"", "skip_verify"),
            ("[host.\"https://m\"]\nskip_verify = 1", "host.\"https://m\".skip_verify"),
            ("[host.\"https://m\"]\ncapabilities = [\"pull\", \"fly\"]", "host.\"https://m\".capabilities"),
            ("server = \"ftp://x\"", "server"),
            ("ca = 3", "ca"),
            ("dial_timeout = \"soon\"", "dial_timeout"),
            ("dial_timeout = \"10\"", "dial_timeout"),
            // Past what a Duration (or Go's) holds: an error, not a panic.
            ("dial_timeout = \"99999999999999999999h\"", "dial_timeout"),
            ("[host.\"https://m\"]\ndial_timeout = \"2562048h\"", "host.\"https://m\".dial_timeout"),
            ("dial_timeout = \"2562047h2562047h\"", "dial_timeout"),
            ("dial_timeout = \"1e999h\"", "dial_timeout"),
            ("client = [\"a\", \"b\"]", "client"),
            ("server = ", "(syntax)"),
        ];
        for (text, field) in cases {
            let error = parse(text, "registry.example").unwrap_err().to_string();
            assert!(error.contains("/etc/nodelet/certs.d/x/hosts.toml"), "{error}");
            assert!(error.contains(&format!(": {field}: ")), "{text:?} -> {error}");
        }
    }

    #[test]
    fn directory_lookup_order() {
        let dir = tempfile::tempdir().unwrap();
        let reference = Reference::parse("registry.example:5000/app:1").unwrap();
        // Nothing configured: the default host.
        let hosts = hosts_for(Some(dir.path()), &reference).unwrap();
        assert_eq!(hosts, [RegistryHost::default_for(&reference)]);
        assert_eq!(hosts_for(Some(&dir.path().join("missing")), &reference).unwrap().len(), 1);

        let write = |sub: &str, server: &str| {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
            std::fs::write(dir.path().join(sub).join("hosts.toml"), format!("server = \"{server}\"")).unwrap();
        };
        let server = |reference: &Reference| hosts_for(Some(dir.path()), reference).unwrap()[0].api_base();
        write("_default", "https://default.example");
        assert_eq!(server(&reference), "https://default.example/v2");
        write("registry.example:5000", "https://colon.example");
        assert_eq!(server(&reference), "https://colon.example/v2");
        write("registry.example_5000_", "https://underscore.example");
        assert_eq!(server(&reference), "https://underscore.example/v2");
    }

    #[test]
    fn legacy_certificate_files() {
        let dir = tempfile::tempdir().unwrap();
        let reference = Reference::parse("127.0.0.1:5000/app:1").unwrap();
        let host_dir = dir.path().join("127.0.0.1:5000");
        std::fs::create_dir(&host_dir).unwrap();
        std::fs::write(host_dir.join("ca.crt"), "x").unwrap();
        std::fs::write(host_dir.join("client.cert"), "x").unwrap();
        let error = hosts_for(Some(dir.path()), &reference).unwrap_err().to_string();
        assert!(error.contains("client.cert") && error.contains("client.key"), "{error}");
        std::fs::write(host_dir.join("client.key"), "x").unwrap();
        let hosts = hosts_for(Some(dir.path()), &reference).unwrap();
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].api_base(), "https://127.0.0.1:5000/v2", "certificates mean https, even on loopback");
        assert_eq!(hosts[0].ca, [host_dir.join("ca.crt")]);
        assert_eq!(
            hosts[0].client,
            Some(ClientCert { cert: host_dir.join("client.cert"), key: Some(host_dir.join("client.key")) })
        );
    }
}
