//! `canary-gateway import nginx FILE`: an nginx / OpenResty configuration (with its includes)
//! read by our own parser ([`syntax`]), translated into the gateway's spec ([`translate`]) and
//! written as a configuration file whose parts carry comments naming the nginx `file:line`
//! they came from, with a [`Report`] of what became of every directive.

mod conditions;
mod edge;
mod location;
mod report;
mod routing;
mod server;
pub mod syntax;
mod table;
mod translate;
mod upstream;
mod values;
mod walk;

use std::path::{Path, PathBuf};

use serde_yaml::Value;

pub use report::{Entry, Report, Verdict};
use syntax::Pos;
pub use syntax::SyntaxError;
pub use translate::{Origins, Translation};

use crate::config::spec::GatewaySpec;

/// What importing a file gives: the spec, the file text to write and the report.
pub struct Imported {
    pub spec: GatewaySpec,
    pub yaml: String,
    pub report: Report,
}

/// Why an import failed: the nginx file does not parse (exit 2), or the translation could
/// not be written (a bug: the spec did not read back as itself).
#[derive(Debug)]
pub enum ImportError {
    Syntax(SyntaxError),
    Write(String),
}

impl std::fmt::Display for ImportError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            ImportError::Syntax(e) => write!(f, "{e}"),
            ImportError::Write(e) => write!(f, "cannot write the configuration: {e}"),
        }
    }
}

/// Imports `file`; relative paths in it (includes, certificates, pages) resolve against its
/// folder, as nginx's prefix does for `nginx -c FILE`.
pub fn import_file(file: &Path) -> Result<Imported, ImportError> {
    let prefix = file
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let prefix = std::fs::canonicalize(&prefix).unwrap_or(prefix);
    let tree = syntax::parse_file(file, &prefix).map_err(ImportError::Syntax)?;
    let t = translate::translate(&tree, &prefix);
    let yaml = write_yaml(&t, file).map_err(ImportError::Write)?;
    Ok(Imported {
        spec: t.spec,
        yaml,
        report: t.report,
    })
}

/// `# nginx: a.conf:3, b.conf:9` for the positions of one part.
fn comment(positions: &[Pos], indent: usize) -> String {
    let mut seen: Vec<String> = Vec::new();
    for p in positions {
        let s = p.to_string();
        if !seen.contains(&s) {
            seen.push(s);
        }
    }
    if seen.is_empty() {
        return String::new();
    }
    format!("{}# nginx: {}\n", " ".repeat(indent), seen.join(", "))
}

fn indented(value: &Value, indent: usize) -> Result<String, String> {
    let text = serde_yaml::to_string(value).map_err(|e| e.to_string())?;
    let pad = " ".repeat(indent);
    Ok(text.lines().map(|l| format!("{pad}{l}\n")).collect())
}

/// The spec as a configuration file, each listener, group, route and gateway-wide key after a
/// comment naming where in the nginx files it came from. It is checked to read back as the
/// same spec, so the comments never change what the file means.
pub fn write_yaml(t: &Translation, source: &Path) -> Result<String, String> {
    let value = serde_yaml::to_value(&t.spec).map_err(|e| e.to_string())?;
    let Value::Mapping(map) = value else {
        return Err("the spec is not a map".into());
    };
    let mut out = format!(
        "# Written by `canary-gateway import nginx {}`: check it with `canary-gateway -t -c FILE`\n\
         # and read the import report for what did not carry over.\nversion: 1\ngateway:\n",
        source.display()
    );
    for (key, value) in &map {
        let key = key.as_str().unwrap_or_default();
        match (key, value) {
            ("listen", Value::Sequence(items)) => {
                out.push_str("  listen:\n");
                for (i, item) in items.iter().enumerate() {
                    out.push_str(&comment(
                        t.origins.listen.get(i).map_or(&[], Vec::as_slice),
                        2,
                    ));
                    out.push_str(&indented(&Value::Sequence(vec![item.clone()]), 2)?);
                }
            }
            ("groups", Value::Mapping(groups)) => {
                out.push_str("  groups:\n");
                for (name, group) in groups {
                    let at = name.as_str().and_then(|n| t.origins.groups.get(n));
                    out.push_str(&comment(at.map_or(&[], Vec::as_slice), 4));
                    let mut one = serde_yaml::Mapping::new();
                    one.insert(name.clone(), group.clone());
                    out.push_str(&indented(&Value::Mapping(one), 4)?);
                }
            }
            ("routes", Value::Sequence(items)) => {
                out.push_str("  routes:\n");
                for (i, item) in items.iter().enumerate() {
                    if let Some((at, note)) = t.origins.routes.get(i) {
                        out.push_str(&comment(std::slice::from_ref(at), 2));
                        if let Some(note) = note {
                            out.push_str(&format!("  # {note}\n"));
                        }
                    }
                    out.push_str(&indented(&Value::Sequence(vec![item.clone()]), 2)?);
                }
            }
            _ => {
                let at = t.origins.keys.get(key).map_or(&[][..], Vec::as_slice);
                out.push_str(&comment(at, 2));
                let mut one = serde_yaml::Mapping::new();
                one.insert(Value::from(key), value.clone());
                out.push_str(&indented(&Value::Mapping(one), 2)?);
            }
        }
    }
    let again = GatewaySpec::from_yaml(&out).map_err(|e| format!("{e}\n{out}"))?;
    if again != t.spec {
        return Err(format!(
            "the written file does not read back as the spec:\n{out}"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
