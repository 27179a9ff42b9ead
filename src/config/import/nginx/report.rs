//! The import report: one entry for every directive read, with its verdict, where it was and
//! why, and the counts that decide the command's exit status.

use std::fmt;

use super::syntax::{Directive, Pos};

/// What became of a directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// Carried over with the same behaviour.
    Translated,
    /// Carried over with a difference the entry names.
    Approximated,
    /// Not written because the gateway does it itself (forwarding headers, HTTP/1.1 upstream…).
    DoneByGateway,
    /// Nothing in the written file does it.
    NotTranslated,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Translated => "translated",
            Verdict::Approximated => "approximated",
            Verdict::DoneByGateway => "done by the gateway",
            Verdict::NotTranslated => "NOT translated",
        }
    }
}

/// One directive's line in the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub at: Pos,
    /// The directive as written, shortened (`proxy_pass http://v1`).
    pub directive: String,
    pub verdict: Verdict,
    pub why: String,
    /// Whether it decides where a request goes or whether it is served at all.
    pub routing: bool,
}

/// Every entry, in the order the directives were read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub entries: Vec<Entry>,
}

impl Report {
    pub fn add(&mut self, d: &Directive, verdict: Verdict, routing: bool, why: impl Into<String>) {
        let mut text = d.name.clone();
        for a in &d.args {
            text.push(' ');
            if a.is_empty() || a.contains(char::is_whitespace) {
                text.push_str(&format!("{a:?}"));
            } else {
                text.push_str(a);
            }
        }
        if d.block.is_some() {
            text.push_str(" {…}");
        }
        if text.chars().count() > 72 {
            text = text.chars().take(70).collect::<String>() + "…";
        }
        self.entries.push(Entry {
            at: d.at.clone(),
            directive: text,
            verdict,
            why: why.into(),
            routing,
        });
    }

    pub fn count(&self, verdict: Verdict) -> usize {
        self.entries.iter().filter(|e| e.verdict == verdict).count()
    }

    /// Routing-relevant directives nothing in the written file does: the command exits 1
    /// when there is any.
    pub fn routing_left_over(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.routing && e.verdict == Verdict::NotTranslated)
            .count()
    }

    /// The entries for directives named `name`.
    pub fn of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries
            .iter()
            .filter(move |e| e.directive.split(' ').next() == Some(name))
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let mut entries: Vec<&Entry> = self.entries.iter().collect();
        entries.sort_by(|a, b| {
            (&a.at.file, a.at.line, a.at.col).cmp(&(&b.at.file, b.at.line, b.at.col))
        });
        for e in entries {
            writeln!(
                f,
                "{}:{}  {}  [{}{}] {}",
                e.at.file.display(),
                e.at.line,
                e.directive,
                e.verdict.label(),
                if e.routing { ", routing" } else { "" },
                e.why
            )?;
        }
        writeln!(
            f,
            "\n{} directives: {} translated, {} approximated, {} done by the gateway, {} not translated",
            self.entries.len(),
            self.count(Verdict::Translated),
            self.count(Verdict::Approximated),
            self.count(Verdict::DoneByGateway),
            self.count(Verdict::NotTranslated),
        )?;
        match self.routing_left_over() {
            0 => writeln!(f, "everything that affects routing was translated"),
            n => writeln!(
                f,
                "{n} directive(s) that affect routing were NOT translated (marked \"NOT translated, routing\")"
            ),
        }
    }
}
