//! `meshguard` CLI.
//!
//!     meshguard validate <filter> <config.json|config.yaml|->
//!     meshguard envoy-config [--filters FILE] [--listen H:P] [--admin H:P]
//!                            [--upstream H:P] [--wasm-dir DIR] [--compose] [-o FILE]
//!     meshguard wasm-filter <name> <module.wasm> <config.json|yaml|->

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use meshguard::envoy::{self, Addr, FiltersFile, Local, WasmFilter};
use meshguard::filters;

fn usage() -> String {
    let names: Vec<&str> = filters::all().iter().map(|f| f.name).collect();
    format!(
        "usage:
  meshguard validate <filter> <config.json|config.yaml|->
      Checks a pluginConfig with the filter's own code (JSON, or YAML as in
      a WasmPlugin's pluginConfig). Errors name the file and the JSON path.
  meshguard envoy-config [--filters FILE] [--listen HOST:PORT] [--admin HOST:PORT]
                         [--upstream HOST:PORT] [--wasm-dir DIR] [--compose] [-o FILE]
      Renders the local Envoy config (the filters in FILE, default
      deploy/local/filters.yaml, in front of the demo upstream). --compose
      renders the docker-compose variant (deploy/local/envoy.yaml).
  meshguard wasm-filter <name> <module.wasm> <config.json|config.yaml|->
      Prints the Envoy http_filters entry (JSON) for one module.

filters: {}",
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
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<String, String> {
    match args.first().map(String::as_str) {
        Some("validate") => match args {
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
                    // Not a shipped filter (a fixture, a chain): rendered as is.
                    Err(_) => WasmFilter::module(name, Path::new(module), config),
                };
                Ok(format!("{}\n", filter.block()))
            }
            _ => Err(usage()),
        },
        Some("-h" | "--help" | "help") => Ok(usage() + "\n"),
        _ => Err(usage()),
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
        let local = Local {
            listen,
            admin,
            upstream,
            filters: FiltersFile::load(&filters_file)?.wasm_filters(&dir)?,
            clusters: Vec::new(),
        };
        local.to_yaml(envoy::GENERATED)?
    };
    match out {
        Some(path) => {
            std::fs::write(&path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(String::new())
        }
        None => Ok(text),
    }
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
