//! `meshguard` CLI.
//!
//!     meshguard render POLICY [--env ENV] [-o DIR] [--lock FILE] [--envoyfilter local|ecds]
//!     meshguard validate POLICY [--lock FILE]
//!     meshguard validate <filter> <config.json|config.yaml|->
//!     meshguard envoy-config [--filters FILE] [--listen H:P] [--admin H:P]
//!                            [--upstream H:P] [--wasm-dir DIR] [--compose] [-o FILE]
//!     meshguard wasm-filter <name> <module.wasm> <config.json|yaml|->
//!     meshguard push <module.wasm> oci://REGISTRY/REPO:TAG [--format compat|oci] ...
//!     meshguard pull oci://REGISTRY/REPO:TAG -o plugin.wasm [--sha256 HEX] ...
//!     meshguard token [--sub USER] [--alg RS256|ES256] [--ttl SECONDS] ...

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use meshguard::envoy::{self, Addr, FiltersFile, Local, WasmFilter};
use meshguard::filters;
use meshguard::oci;
use meshguard::policy::{self, render, PolicyFile};

fn usage() -> String {
    let names: Vec<&str> = filters::all().iter().map(|f| f.name).collect();
    format!(
        "usage:
  meshguard render POLICY [--env ENV] [-o DIR] [--lock FILE] [--envoyfilter local|ecds]
      Renders Istio resources from a policy file (see istio/examples/shop.yaml):
      a DestinationRule and a VirtualService per service, a WasmPlugin per
      filter (or, with --envoyfilter, EnvoyFilters: `local` inserts the
      module from mesh.wasmDir in the proxy, `ecds` has istio-agent fetch
      the oci:// image). Without --env: the policy without environment
      overrides. Multi-document YAML on stdout, or one file per resource in
      DIR. --lock takes digests from `make push`'s dist/images.lock.json
      for filters whose policy has no `digest`.
  meshguard validate POLICY [--lock FILE]
      Checks the policy and every environment: the schema, Istio's
      validation rules, each filter's config with the filter's own code.
      Every mistake as POLICY:LINE: path: what is wrong.
  meshguard validate <filter> <config.json|config.yaml|->
      Checks a pluginConfig with the filter's own code (JSON, or YAML as in
      a WasmPlugin's pluginConfig). Errors name the file and the JSON path.
  meshguard envoy-config [--filters FILE] [--listen HOST:PORT] [--admin HOST:PORT]
                         [--upstream HOST:PORT] [--wasm-dir DIR] [--cluster NAME=HOST:PORT]
                         [--compose] [-o FILE]
      Renders the local Envoy config (the filters in FILE, default
      deploy/local/filters.yaml, in front of the demo upstream, with the
      clusters FILE lists for callouts; --cluster moves one). --compose
      renders the docker-compose variant (deploy/local/envoy.yaml).
  meshguard wasm-filter <name> <module.wasm> <config.json|config.yaml|->
      Prints the Envoy http_filters entry (JSON) for one module.
  meshguard push <module.wasm> oci://REGISTRY/REPO[:TAG] [--format compat|oci]
                 [--lock FILE] [--plain-http] [--username U --password-stdin]
      Pushes the module as a Wasm OCI image Istio reads (compat, the default:
      one tar+gzip layer with plugin.wasm; oci: the raw module as a
      module.wasm layer). Reproducible: the same module gives the same
      manifest digest, which is what a WasmPlugin's `sha256` must be.
      --lock records the push in a lock file (filter -> reference, digests).
  meshguard pull oci://REGISTRY/REPO[:TAG|@sha256:D] -o FILE [--sha256 HEX]
                 [--max-size BYTES] [--plain-http] [--username U --password-stdin]
      Fetches and verifies a module exactly as istio-agent does: the same
      format detection, the manifest digest against --sha256 (a WasmPlugin's
      sha256), the \\0asm magic, the size limit (default 256 MiB).
      Credentials: --username/--password-stdin, else the Docker config
      ($DOCKER_CONFIG/config.json or ~/.docker/config.json). Plain HTTP
      only with --plain-http.

{}
{}

filters: {}

exit codes: 0 success; 1 invalid input (policy, config, files) or a failed
operation (registry); 2 usage error (unknown command or option).",
        meshguard::token::USAGE,
        meshguard::sign::USAGE,
        names.join(", ")
    )
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("meshguard: {msg}");
            if msg.starts_with("usage:") || msg.contains("\n\nusage:") {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

fn run(args: &[String]) -> Result<String, String> {
    // `meshguard <command> --help` prints the usage, for every command.
    if args.len() > 1 && args.iter().skip(1).any(|a| a == "-h" || a == "--help") {
        return Ok(usage() + "\n");
    }
    match args.first().map(String::as_str) {
        Some("render") => render_cmd(args.get(1..).unwrap_or_default()),
        Some("validate") => match args {
            // `validate authn` without a config: a usage error, not a
            // missing policy file called `authn`.
            [_, name] if filters::find(name).is_ok() && !Path::new(name).exists() => Err(format!(
                "usage: meshguard validate {name} <config.json|config.yaml|->: the config to check is missing"
            )),
            [_, policy] => validate_policy(policy, None),
            [_, policy, flag, lock] if flag == "--lock" => {
                validate_policy(policy, Some(Path::new(lock)))
            }
            [_, filter, file] => {
                let f = filters::find(filter)?;
                let (text, origin) = read_input(file)?;
                filters::validate_bytes(&f, &text, &origin)?;
                Ok(format!("{origin}: ok\n"))
            }
            _ => Err(usage()),
        },
        Some("envoy-config") => envoy_config(args.get(1..).unwrap_or_default()),
        Some("wasm-filter") => match args {
            [_, name, module, file] => {
                let (text, origin) = read_input(file)?;
                let json = filters::config_to_json(&text, &origin)?;
                let config: serde_json::Value =
                    serde_json::from_slice(&json).map_err(|e| format!("{origin}: {e}"))?;
                let filter = match filters::find(name) {
                    Ok(f) => {
                        filters::validate_bytes(&f, &json, &origin)?;
                        let mut w = WasmFilter::module(f.name, Path::new(module), config);
                        w.key = f.config_key.to_string();
                        w
                    }
                    // Not a shipped filter (a fixture, a chain): rendered as
                    // is, and said so (a typo must not pass silently).
                    Err(_) => {
                        eprintln!(
                            "meshguard: `{name}` is not a shipped filter ({}); its config is not checked",
                            filters::all().iter().map(|f| f.name).collect::<Vec<_>>().join(", ")
                        );
                        WasmFilter::module(name, Path::new(module), config)
                    }
                };
                if !Path::new(module).is_file() {
                    return Err(format!("{module}: no such module file"));
                }
                Ok(format!("{}\n", filter.block()))
            }
            _ => Err(usage()),
        },
        Some("token") => meshguard::token::token(args.get(1..).unwrap_or_default()),
        Some("sign") => meshguard::sign::sign(args.get(1..).unwrap_or_default()),
        Some("push") => push(args.get(1..).unwrap_or_default()),
        Some("pull") => pull(args.get(1..).unwrap_or_default()),
        Some("-h" | "--help" | "help") => Ok(usage() + "\n"),
        _ => Err(usage()),
    }
}

fn validate_policy(policy: &str, lock: Option<&Path>) -> Result<String, String> {
    let lock = lock.map(policy::load_lock).transpose()?;
    let file = PolicyFile::load(Path::new(policy))?;
    match file.validate(lock.as_ref()) {
        Ok(n) => {
            let envs = file.environments();
            Ok(format!(
                "{policy}: ok ({n} checked: the base policy{})\n",
                if envs.is_empty() {
                    String::new()
                } else {
                    format!(" and environments {}", envs.join(", "))
                }
            ))
        }
        Err(errors) => Err(format!(
            "{} error{} in {policy}:\n{}",
            errors.len(),
            if errors.len() == 1 { "" } else { "s" },
            errors.join("\n")
        )),
    }
}

fn render_cmd(args: &[String]) -> Result<String, String> {
    let mut positional = Vec::new();
    let mut env: Option<String> = None;
    let mut out: Option<PathBuf> = None;
    let mut lock: Option<PathBuf> = None;
    let mut wiring = render::Wiring::WasmPlugin;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{arg} needs a value\n\n{}", usage()))
        };
        match arg.as_str() {
            "--env" => env = Some(value()?),
            "-o" | "--output" => out = Some(PathBuf::from(value()?)),
            "--lock" => lock = Some(PathBuf::from(value()?)),
            "--envoyfilter" => wiring = render::Wiring::parse(&value()?)?,
            flag if flag.starts_with('-') && flag != "-" => {
                return Err(format!("unknown option `{flag}`\n\n{}", usage()))
            }
            _ => positional.push(arg.clone()),
        }
    }
    let [policy_path] = positional.as_slice() else {
        return Err(usage());
    };
    let lock = lock.as_deref().map(policy::load_lock).transpose()?;
    let file = PolicyFile::load(Path::new(policy_path))?;
    let resolved = file
        .resolve(env.as_deref(), lock.as_ref())
        .map_err(|errors| {
            format!(
                "{} error{} in {policy_path}:\n{}",
                errors.len(),
                if errors.len() == 1 { "" } else { "s" },
                errors.join("\n")
            )
        })?;
    let resources = render::resources(&resolved, wiring)?;
    match out {
        None => render::to_stream(&resolved, &resources),
        Some(dir) => {
            std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let mut written = String::new();
            // A resource rendered last time but not now (a removed service)
            // must not linger for `kubectl apply -f DIR`: drop the files this
            // command wrote before (they start with its header), nothing else.
            let names: Vec<String> = resources.iter().map(|r| r.file_name()).collect();
            let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            for entry in entries.flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if !name.ends_with(".yaml") || names.contains(&name) {
                    continue;
                }
                let ours = std::fs::read_to_string(&path)
                    .is_ok_and(|t| t.starts_with("# Generated by `meshguard render "));
                if ours {
                    std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                    written.push_str(&format!(
                        "removed {} (no longer rendered)\n",
                        path.display()
                    ));
                }
            }
            for r in &resources {
                let path = dir.join(r.file_name());
                std::fs::write(&path, render::to_file(&resolved, r)?)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                written.push_str(&format!("wrote {}\n", path.display()));
            }
            Ok(written)
        }
    }
}

fn envoy_config(args: &[String]) -> Result<String, String> {
    let mut filters_file = envoy::default_filters_file();
    let mut listen = Addr::new("127.0.0.1", 10000);
    let mut admin = Addr::new("127.0.0.1", 9901);
    let mut upstream = Addr::new("127.0.0.1", 8081);
    let mut wasm_dir: Option<String> = None;
    let mut out: Option<PathBuf> = None;
    let mut compose = false;
    let mut cluster_overrides: Vec<(String, Addr)> = Vec::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value\n\n{}", usage()))
        };
        match flag.as_str() {
            "--filters" => filters_file = PathBuf::from(value()?),
            "--listen" => listen = Addr::parse(&value()?)?,
            "--admin" => admin = Addr::parse(&value()?)?,
            "--upstream" => upstream = Addr::parse(&value()?)?,
            "--wasm-dir" => wasm_dir = Some(value()?),
            "-o" | "--output" => out = Some(PathBuf::from(value()?)),
            "--compose" => compose = true,
            "--cluster" => {
                let v = value()?;
                let (name, addr) = v
                    .split_once('=')
                    .ok_or_else(|| format!("--cluster {v}: expected NAME=HOST:PORT"))?;
                cluster_overrides.push((name.to_string(), Addr::parse(addr)?));
            }
            "-h" | "--help" => return Ok(usage() + "\n"),
            other => return Err(format!("unknown option `{other}`\n\n{}", usage())),
        }
    }
    let text = if compose {
        envoy::compose(&filters_file)?
    } else {
        let dir = match wasm_dir {
            Some(d) => d,
            None => std::env::current_dir()
                .map_err(|e| e.to_string())?
                .join("dist")
                .to_string_lossy()
                .into_owned(),
        };
        let file = FiltersFile::load(&filters_file)?;
        let mut clusters = file.cluster_addrs(false)?;
        for (name, addr) in cluster_overrides {
            match clusters.iter_mut().find(|(n, _)| *n == name) {
                Some(c) => c.1 = addr,
                None => {
                    return Err(format!(
                        "--cluster {name}: no such cluster in {}",
                        filters_file.display()
                    ))
                }
            }
        }
        let local = Local {
            listen,
            admin,
            upstream,
            filters: file.local_wasm_filters(&dir)?,
            clusters,
            grpc_clusters: file.grpc_clusters(),
        };
        local.to_yaml(&envoy::generated_from(&filters_file))?
    };
    match out {
        Some(path) => {
            std::fs::write(&path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(String::new())
        }
        None => Ok(text),
    }
}

/// Flags `push` and `pull` share: how to reach the registry.
#[derive(Default)]
struct RegistryFlags {
    plain_http: bool,
    username: Option<String>,
    password_stdin: bool,
}

impl RegistryFlags {
    /// Takes `flag` (and its value from `it`) if it is a registry flag.
    fn take(&mut self, flag: &str, it: &mut std::slice::Iter<'_, String>) -> Result<bool, String> {
        match flag {
            "--plain-http" => self.plain_http = true,
            "--username" => {
                self.username = Some(
                    it.next()
                        .cloned()
                        .ok_or_else(|| format!("{flag} needs a value\n\n{}", usage()))?,
                )
            }
            "--password-stdin" => self.password_stdin = true,
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn client(&self, reference: &oci::Reference) -> Result<oci::Client, String> {
        let (credentials, credentials_source) = match (&self.username, self.password_stdin) {
            (Some(user), true) => {
                let mut password = String::new();
                std::io::stdin()
                    .read_to_string(&mut password)
                    .map_err(|e| format!("reading the password from stdin: {e}"))?;
                let password = password.trim_end_matches(['\r', '\n']).to_string();
                let creds = oci::Credentials {
                    username: user.clone(),
                    password,
                };
                (
                    Some(creds),
                    Some(format!("the credentials of user `{user}`")),
                )
            }
            (Some(_), false) | (None, true) => {
                return Err("--username and --password-stdin go together".into())
            }
            (None, false) => {
                let creds = oci::auth::docker_credentials(&reference.registry)?;
                let source = oci::auth::docker_config_path()
                    .map(|p| format!("the credentials in {}", p.display()));
                (creds, source)
            }
        };
        Ok(oci::Client::new(
            &reference.registry,
            oci::Options {
                plain_http: self.plain_http,
                credentials,
                credentials_source,
            },
        ))
    }
}

fn push(args: &[String]) -> Result<String, String> {
    let mut positional = Vec::new();
    let mut format = oci::Format::Compat;
    let mut lock: Option<PathBuf> = None;
    let mut reg = RegistryFlags::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if reg.take(arg, &mut it)? {
            continue;
        }
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{arg} needs a value\n\n{}", usage()))
        };
        match arg.as_str() {
            "--format" => format = oci::Format::parse(&value()?)?,
            "--lock" => lock = Some(PathBuf::from(value()?)),
            flag if flag.starts_with('-') => {
                return Err(format!("unknown option `{flag}`\n\n{}", usage()))
            }
            _ => positional.push(arg.clone()),
        }
    }
    let [module, url] = positional.as_slice() else {
        return Err(usage());
    };
    let reference = oci::Reference::parse(url)?;
    let bytes = std::fs::read(module).map_err(|e| format!("{module}: cannot read: {e}"))?;
    let name = Path::new(module)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A shipped filter's root_id goes into the oci variant's runtime config.
    let root_ids: Vec<String> = filters::find(&name)
        .map(|f| vec![f.config_key.to_string()])
        .unwrap_or_default();
    let mut client = reg.client(&reference)?;
    let pushed = oci::push(&bytes, &reference, format, &root_ids, &mut client)
        .map_err(|e| format!("push {}: {e}", reference.oci_url()))?;
    if let Some(lock) = lock {
        oci::update_lock(&lock, &name, &pushed)?;
    }
    Ok(pushed.summary())
}

fn pull(args: &[String]) -> Result<String, String> {
    let mut positional = Vec::new();
    let mut out: Option<PathBuf> = None;
    let mut sha256: Option<String> = None;
    let mut max_size = oci::DEFAULT_MAX_SIZE;
    let mut reg = RegistryFlags::default();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if reg.take(arg, &mut it)? {
            continue;
        }
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{arg} needs a value\n\n{}", usage()))
        };
        match arg.as_str() {
            "-o" | "--output" => out = Some(PathBuf::from(value()?)),
            "--sha256" => sha256 = Some(value()?),
            "--max-size" => {
                let v = value()?;
                max_size = v
                    .parse()
                    .map_err(|_| format!("--max-size `{v}`: expected a number of bytes"))?;
            }
            flag if flag.starts_with('-') => {
                return Err(format!("unknown option `{flag}`\n\n{}", usage()))
            }
            _ => positional.push(arg.clone()),
        }
    }
    let ([url], Some(out)) = (positional.as_slice(), out) else {
        return Err(usage());
    };
    let reference = oci::Reference::parse(url)?;
    let mut client = reg.client(&reference)?;
    let pulled = oci::pull(&reference, sha256.as_deref(), max_size, &mut client)
        .map_err(|e| format!("pull {}: {e}", reference.oci_url()))?;
    std::fs::write(&out, &pulled.module).map_err(|e| format!("{}: {e}", out.display()))?;
    Ok(format!(
        "pulled {} ({})\nmanifest digest: {}\nmodule sha256:   {}\nwrote {} bytes to {}\n",
        reference.oci_url(),
        pulled.layout.name(),
        pulled.manifest_digest,
        pulled.module_sha256,
        pulled.module.len(),
        out.display()
    ))
}

fn read_input(file: &str) -> Result<(Vec<u8>, String), String> {
    if file == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| format!("reading stdin: {e}"))?;
        Ok((buf, "<stdin>".to_string()))
    } else {
        let bytes = std::fs::read(file).map_err(|e| format!("{file}: cannot read: {e}"))?;
        Ok((bytes, file.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors() {
        assert!(run(&["validate".into()]).unwrap_err().starts_with("usage"));
        assert!(run(&["envoy-config".into(), "--bogus".into()])
            .unwrap_err()
            .contains("unknown option"));
        assert!(run(&["envoy-config".into(), "--listen".into()])
            .unwrap_err()
            .contains("needs a value"));
        assert!(run(&["envoy-config".into(), "--listen".into(), "x".into()])
            .unwrap_err()
            .contains("HOST:PORT"));
    }

    #[test]
    fn push_and_pull_usage_errors() {
        let run_s = |a: &[&str]| run(&a.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert!(run_s(&["push", "x.wasm"]).unwrap_err().starts_with("usage"));
        assert!(
            run_s(&["push", "x.wasm", "oci://r.example/x:1", "--format", "tar"])
                .unwrap_err()
                .contains("compat or oci")
        );
        assert!(run_s(&["push", "x.wasm", "oci://r.example/x:1", "--bogus"])
            .unwrap_err()
            .contains("unknown option"));
        assert!(run_s(&["push", "/nonexistent.wasm", "oci://r.example/x:1"])
            .unwrap_err()
            .contains("cannot read"));
        assert!(run_s(&["pull", "oci://r.example/x:1"])
            .unwrap_err()
            .starts_with("usage"));
        assert!(run_s(&["pull", "http://r.example/x", "-o", "f"])
            .unwrap_err()
            .contains("not oci"));
        assert!(
            run_s(&["pull", "oci://r/x", "-o", "f", "--max-size", "big"])
                .unwrap_err()
                .contains("number of bytes")
        );
        assert!(
            run_s(&["pull", "oci://r.example/x:1", "-o", "f", "--username", "u"])
                .unwrap_err()
                .contains("go together")
        );
    }

    #[test]
    fn validate_names_the_file() {
        let dir = std::env::temp_dir().join(format!("mg-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("bad.json");
        std::fs::write(&f, r#"{"experiments": []}"#).unwrap();
        let err = run(&[
            "validate".into(),
            "ab-routing".into(),
            f.to_string_lossy().into(),
        ])
        .unwrap_err();
        assert!(
            err.starts_with(&format!(
                "{}: invalid plugin config at $.experiments",
                f.display()
            )),
            "{err}"
        );
    }
}
