//! The `import` subcommand's command line: `canary-gateway import nginx FILE [-o OUT]
//! [--report REPORT]`. It writes the translated configuration (standard output without `-o`)
//! and the report (standard error without `--report`), and says how it went by its exit status:
//! 0 everything that affects routing was translated, 1 something was not (or the written file
//! would not pass `-t`), 2 the nginx file does not parse or the command line is wrong.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::import::nginx::{self, ImportError};

const USAGE: &str = "usage: canary-gateway import nginx FILE [-o OUT.yaml] [--report REPORT.txt]";

/// Runs the subcommand with the arguments after `import`; returns the exit status.
pub fn run(args: &[String]) -> u8 {
    let mut file = None;
    let mut out: Option<PathBuf> = None;
    let mut report_to: Option<PathBuf> = None;
    let mut it = args.iter();
    match it.next().map(String::as_str) {
        Some("nginx") => {}
        _ => return usage("the only format is `nginx`"),
    }
    while let Some(a) = it.next() {
        match a.as_str() {
            "-o" | "--output" => match it.next() {
                Some(p) => out = Some(p.into()),
                None => return usage("-o needs a file"),
            },
            "--report" => match it.next() {
                Some(p) => report_to = Some(p.into()),
                None => return usage("--report needs a file"),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return 0;
            }
            other if file.is_none() && !other.starts_with('-') => file = Some(PathBuf::from(other)),
            other => return usage(&format!("unexpected {other:?}")),
        }
    }
    let Some(file) = file else {
        return usage("no nginx file named");
    };
    let imported = match nginx::import_file(&file) {
        Ok(i) => i,
        Err(ImportError::Syntax(e)) => {
            eprintln!("canary-gateway: import: {e}");
            return 2;
        }
        Err(e) => {
            eprintln!("canary-gateway: import: {e}");
            return 2;
        }
    };
    let mut report = imported.report.to_string();
    // The written file must pass `-t` where it is written: relative paths resolve there.
    let base = out
        .as_deref()
        .and_then(Path::parent)
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let name = out
        .as_deref()
        .map_or("(standard output)".to_string(), |p| p.display().to_string());
    let valid = crate::config::load_str(&imported.yaml, &name, &base);
    if let Err(e) = &valid {
        report.push_str(&format!(
            "the written configuration does not pass -t yet: {e}\n"
        ));
    }
    let written = match &out {
        Some(path) => std::fs::write(path, &imported.yaml),
        None => std::io::stdout().write_all(imported.yaml.as_bytes()),
    };
    if let Err(e) = written {
        eprintln!("canary-gateway: import: cannot write {name}: {e}");
        return 2;
    }
    match &report_to {
        Some(path) => {
            if let Err(e) = std::fs::write(path, &report) {
                eprintln!(
                    "canary-gateway: import: cannot write {}: {e}",
                    path.display()
                );
                return 2;
            }
            // The summary lines on the terminal too.
            let tail: Vec<&str> = report.lines().rev().take_while(|l| !l.is_empty()).collect();
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        None => eprint!("{report}"),
    }
    if imported.report.routing_left_over() == 0 && valid.is_ok() {
        0
    } else {
        1
    }
}

fn usage(problem: &str) -> u8 {
    eprintln!("canary-gateway: import: {problem}\n{USAGE}");
    2
}
