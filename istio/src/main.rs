//! `meshguard` CLI. Today: validate a filter's pluginConfig with the very
//! types and checks the filter runs in `on_configure`, so a mistake shows up
//! (with its JSON path) before it reaches a proxy.
//!
//!     meshguard validate ab-routing config.json
//!     meshguard validate ab-routing - < config.json

use std::io::Read;
use std::process::ExitCode;

const USAGE: &str = "usage: meshguard validate <filter> <file.json|->\n\nfilters: ab-routing";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(msg) => {
            println!("{msg}");
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<String, String> {
    match args {
        [cmd, filter, file] if cmd == "validate" => {
            let bytes = read_input(file)?;
            validate(filter, &bytes).map(|summary| format!("{file}: ok ({summary})"))
        }
        [flag] if flag == "-h" || flag == "--help" => Ok(USAGE.to_string()),
        _ => Err(USAGE.to_string()),
    }
}

fn read_input(file: &str) -> Result<Vec<u8>, String> {
    if file == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| format!("reading stdin: {e}"))?;
        Ok(buf)
    } else {
        std::fs::read(file).map_err(|e| format!("reading {file}: {e}"))
    }
}

fn validate(filter: &str, bytes: &[u8]) -> Result<String, String> {
    match filter {
        "ab-routing" => {
            let config = meshguard_ab_routing::AbRoutingConfig::from_json(bytes)
                .map_err(|e| e.to_string())?;
            Ok(format!("{} experiment(s)", config.experiments.len()))
        }
        other => Err(format!("unknown filter `{other}`\n\n{USAGE}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_with_json_path() {
        let good = br#"{"experiments":[{"name":"e","variants":[{"name":"a","weight":1}],"sticky_key":["visitor_cookie"]}]}"#;
        assert_eq!(validate("ab-routing", good).unwrap(), "1 experiment(s)");
        let bad = br#"{"experiments":[{"name":"e","variants":[{"name":"a","weight":0}],"sticky_key":["visitor_cookie"]}]}"#;
        let err = validate("ab-routing", bad).unwrap_err();
        assert_eq!(err, "invalid plugin config at $.experiments[0].variants: the variants' weights sum to 0; expected a positive total");
        assert!(validate("nope", good)
            .unwrap_err()
            .contains("unknown filter"));
        assert!(run(&["validate".into()]).unwrap_err().starts_with("usage"));
    }
}
