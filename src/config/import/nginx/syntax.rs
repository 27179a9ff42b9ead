//! nginx's configuration syntax: a lexer and parser of our own for directives, blocks, quoted
//! strings with escapes, `#` comments and `$variables`, and the `include` expansion (globs
//! relative to the including file's folder or to the main file's, nginx's prefix), so the tree
//! is the one `nginx -T` would show. Errors name `file:line:column`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Where a token starts: the file (as given or resolved), 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pos {
    pub file: Rc<PathBuf>,
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One directive: its name, arguments (quotes removed, escapes applied) and its block, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Directive {
    pub name: String,
    pub args: Vec<String>,
    pub block: Option<Vec<Directive>>,
    /// The code of an OpenResty `*_by_lua_block { … }`, read as Lua rather than as nginx.
    pub raw: Option<String>,
    pub at: Pos,
}

impl Directive {
    /// The argument at `i`, or "".
    pub fn arg(&self, i: usize) -> &str {
        self.args.get(i).map_or("", String::as_str)
    }

    /// The block's directives (none for a simple directive).
    pub fn children(&self) -> &[Directive] {
        self.block.as_deref().unwrap_or(&[])
    }
}

/// A syntax error (or an unreadable include) at `file:line:column`.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub file: PathBuf,
    pub line: u32,
    pub col: u32,
    pub message: String,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Semicolon,
    Open,
    Close,
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    file: Rc<PathBuf>,
    line: u32,
    col: u32,
}

impl Lexer<'_> {
    fn pos(&self) -> Pos {
        Pos {
            file: self.file.clone(),
            line: self.line,
            col: self.col,
        }
    }

    fn error(&self, at: &Pos, message: impl Into<String>) -> SyntaxError {
        SyntaxError {
            file: (*at.file).clone(),
            line: at.line,
            col: at.col,
            message: message.into(),
        }
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.line += 1;
            self.col = 1;
        } else {
            self.col += 1;
        }
        Some(c)
    }

    /// The next token and where it starts; `None` at the end of the text.
    fn next(&mut self) -> Result<Option<(Token, Pos)>, SyntaxError> {
        loop {
            match self.chars.peek() {
                None => return Ok(None),
                Some(c) if c.is_whitespace() => {
                    self.bump();
                }
                Some('#') => {
                    while self.chars.peek().is_some_and(|&c| c != '\n') {
                        self.bump();
                    }
                }
                Some(_) => break,
            }
        }
        let at = self.pos();
        let c = self.bump().expect("peeked a character");
        let token = match c {
            ';' => Token::Semicolon,
            '{' => Token::Open,
            '}' => Token::Close,
            '"' | '\'' => Token::Word(self.quoted(c, &at)?),
            _ => Token::Word(self.bare(c, &at)?),
        };
        Ok(Some((token, at)))
    }

    /// A quoted string after its opening quote: `\"`, `\'`, `\\`, `\n`, `\t`, `\r` are
    /// escapes (as nginx reads them); any other backslash stays as it is.
    fn quoted(&mut self, quote: char, at: &Pos) -> Result<String, SyntaxError> {
        let mut text = String::new();
        loop {
            match self.bump() {
                None => return Err(self.error(at, "unterminated quoted string")),
                Some(c) if c == quote => break,
                Some('\\') => match self.bump() {
                    Some(c @ ('"' | '\'' | '\\')) => text.push(c),
                    Some('n') => text.push('\n'),
                    Some('t') => text.push('\t'),
                    Some('r') => text.push('\r'),
                    Some(c) => {
                        text.push('\\');
                        text.push(c);
                    }
                    None => return Err(self.error(at, "unterminated quoted string")),
                },
                Some(c) => text.push(c),
            }
        }
        // nginx wants a separator after a closing quote (`)` too, for `if ($a = "b")`).
        if let Some(&c) = self.chars.peek() {
            if !(c.is_whitespace() || c == ';' || c == '{' || c == '}' || c == ')') {
                let here = self.pos();
                return Err(self.error(&here, format!("unexpected {c:?} after a quoted string")));
            }
        }
        Ok(text)
    }

    /// An unquoted word starting with `first`: up to white space, `;`, `{` or `}`; `${name}`
    /// keeps its braces, and a backslash escapes the next character (as in a quoted string).
    fn bare(&mut self, first: char, at: &Pos) -> Result<String, SyntaxError> {
        let mut text = String::new();
        let mut c = first;
        loop {
            if c == '\\' {
                // As in a quoted string: a backslash keeps the next character from ending
                // the word, and stays unless it escapes a quote, a backslash, n, t or r
                // (so a regex's `\.` reaches the map or `if` as written).
                match self.bump() {
                    Some(next @ ('"' | '\'' | '\\')) => text.push(next),
                    Some('n') => text.push('\n'),
                    Some('t') => text.push('\t'),
                    Some('r') => text.push('\r'),
                    Some(next) => {
                        text.push('\\');
                        text.push(next);
                    }
                    None => return Err(self.error(at, "a backslash at the end of the file")),
                }
            } else if c == '$' && self.chars.peek() == Some(&'{') {
                text.push('$');
                loop {
                    match self.bump() {
                        None => return Err(self.error(at, "unterminated ${variable}")),
                        Some('}') => {
                            text.push('}');
                            break;
                        }
                        Some(inner) => text.push(inner),
                    }
                }
            } else {
                text.push(c);
            }
            match self.chars.peek() {
                Some(&n) if !(n.is_whitespace() || n == ';' || n == '{' || n == '}') => {
                    c = self.bump().expect("peeked");
                }
                _ => return Ok(text),
            }
        }
    }
}

impl Lexer<'_> {
    /// The Lua code of a `*_by_lua_block` after its `{`, up to the matching `}`: braces are
    /// counted outside Lua strings (`'…'`, `"…"`, `[[…]]`) and `--` comments.
    fn lua_block(&mut self, open: &Pos) -> Result<String, SyntaxError> {
        let mut code = String::new();
        let mut depth = 0usize;
        loop {
            let Some(c) = self.bump() else {
                return Err(self.error(open, "this Lua block is never closed (\"}\" missing)"));
            };
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => return Ok(code),
                '}' => depth -= 1,
                '"' | '\'' => {
                    code.push(c);
                    while let Some(s) = self.bump() {
                        code.push(s);
                        if s == '\\' {
                            if let Some(e) = self.bump() {
                                code.push(e);
                            }
                        } else if s == c || s == '\n' {
                            break;
                        }
                    }
                    continue;
                }
                '[' if self.chars.peek() == Some(&'[') => {
                    code.push(c);
                    while let Some(s) = self.bump() {
                        code.push(s);
                        if code.ends_with("]]") && code.len() > 3 {
                            break;
                        }
                    }
                    continue;
                }
                '-' if self.chars.peek() == Some(&'-') => {
                    code.push(c);
                    while let Some(s) = self.bump() {
                        code.push(s);
                        if s == '\n' {
                            break;
                        }
                    }
                    continue;
                }
                _ => {}
            }
            code.push(c);
        }
    }
}

/// Parses one file's text into its directives (includes not expanded).
pub fn parse_text(text: &str, file: &Path) -> Result<Vec<Directive>, SyntaxError> {
    let mut lexer = Lexer {
        chars: text.chars().peekable(),
        file: Rc::new(file.to_path_buf()),
        line: 1,
        col: 1,
    };
    let (directives, end) = parse_block(&mut lexer, None)?;
    debug_assert!(end.is_none());
    Ok(directives)
}

/// Directives up to the `}` closing the block opened at `open` (or the end of the text when
/// `open` is `None`).
fn parse_block(
    lexer: &mut Lexer,
    open: Option<&Pos>,
) -> Result<(Vec<Directive>, Option<Pos>), SyntaxError> {
    let mut directives = Vec::new();
    let mut words: Vec<(String, Pos)> = Vec::new();
    loop {
        let Some((token, at)) = lexer.next()? else {
            if let Some((_, first)) = words.first() {
                return Err(lexer.error(first, "unexpected end of file, expecting \";\" or \"}\""));
            }
            return match open {
                Some(open) => Err(lexer.error(open, "this block is never closed (\"}\" missing)")),
                None => Ok((directives, None)),
            };
        };
        match token {
            Token::Word(w) => words.push((w, at)),
            Token::Semicolon | Token::Open => {
                let Some(((name, start), args)) = words
                    .split_first()
                    .map(|(first, rest)| (first.clone(), rest))
                else {
                    return Err(lexer.error(
                        &at,
                        format!(
                            "unexpected \"{}\"",
                            if token == Token::Open { '{' } else { ';' }
                        ),
                    ));
                };
                let args = args.iter().map(|(w, _)| w.clone()).collect();
                let (block, raw) = if token != Token::Open {
                    (None, None)
                } else if name.ends_with("_by_lua_block") {
                    (Some(Vec::new()), Some(lexer.lua_block(&at)?))
                } else {
                    (Some(parse_block(lexer, Some(&at))?.0), None)
                };
                directives.push(Directive {
                    name,
                    args,
                    block,
                    raw,
                    at: start,
                });
                words.clear();
            }
            Token::Close => {
                if let Some((_, first)) = words.first() {
                    return Err(lexer.error(first, "unexpected \"}\": the directive has no \";\""));
                }
                return match open {
                    Some(_) => Ok((directives, Some(at))),
                    None => Err(lexer.error(&at, "unexpected \"}\"")),
                };
            }
        }
    }
}

/// Reads `main` and every file it includes (recursively), replacing each `include` by the
/// directives of the files it names, in glob order. A relative pattern is resolved against
/// `prefix` (nginx's configuration prefix, the main file's folder) and, when nothing matches
/// there, against the including file's folder. `mime.types`-style includes that match nothing
/// are an error as nginx makes them, unless the pattern has a glob.
pub fn parse_file(main: &Path, prefix: &Path) -> Result<Vec<Directive>, SyntaxError> {
    let text = std::fs::read_to_string(main).map_err(|e| SyntaxError {
        file: main.to_path_buf(),
        line: 0,
        col: 0,
        message: format!("cannot read the file: {e}"),
    })?;
    let directives = parse_text(&text, main)?;
    expand(directives, prefix, 0)
}

fn expand(
    directives: Vec<Directive>,
    prefix: &Path,
    depth: usize,
) -> Result<Vec<Directive>, SyntaxError> {
    let mut out = Vec::new();
    for mut d in directives {
        if d.name == "include" && d.block.is_none() {
            let err = |message: String| SyntaxError {
                file: (*d.at.file).clone(),
                line: d.at.line,
                col: d.at.col,
                message,
            };
            if depth > 16 {
                return Err(err("includes nested more than 16 deep (a cycle?)".into()));
            }
            let pattern = d.arg(0);
            let here = d.at.file.parent().unwrap_or(Path::new("."));
            let mut files = glob(pattern, prefix);
            if files.is_empty() && here != prefix {
                files = glob(pattern, here);
            }
            if files.is_empty() && !pattern.contains(['*', '?', '[']) {
                return Err(err(format!("include {pattern:?}: no such file")));
            }
            for file in files {
                let text = std::fs::read_to_string(&file)
                    .map_err(|e| err(format!("include {}: {e}", file.display())))?;
                let inner = parse_text(&text, &file)?;
                out.extend(expand(inner, prefix, depth + 1)?);
            }
            continue;
        }
        if let Some(block) = d.block.take() {
            d.block = Some(expand(block, prefix, depth)?);
        }
        out.push(d);
    }
    Ok(out)
}

/// The files `pattern` names (relative to `base` unless absolute), sorted; `*`, `?` and
/// `[...]` match within one path component.
pub fn glob(pattern: &str, base: &Path) -> Vec<PathBuf> {
    let path = Path::new(pattern);
    let mut found = vec![if path.is_absolute() {
        PathBuf::from("/")
    } else {
        base.to_path_buf()
    }];
    for part in path.components() {
        let part = part.as_os_str().to_string_lossy();
        if part == "/" {
            continue;
        }
        let mut next = Vec::new();
        for dir in &found {
            if !part.contains(['*', '?', '[']) {
                let candidate = dir.join(part.as_ref());
                if candidate.exists() {
                    next.push(candidate);
                }
                continue;
            }
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.') && wildcard(part.as_bytes(), n.as_bytes()))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|n| dir.join(n)));
        }
        found = next;
    }
    found.retain(|p| p.is_file());
    found
}

/// Shell-style matching of one name: `*`, `?` and `[abc]` / `[a-z]` / `[!x]`.
fn wildcard(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.first() {
        None => name.is_empty(),
        Some(b'*') => (0..=name.len()).any(|i| wildcard(&pattern[1..], &name[i..])),
        Some(b'?') => !name.is_empty() && wildcard(&pattern[1..], &name[1..]),
        Some(b'[') => {
            let Some(end) = pattern.iter().position(|&b| b == b']') else {
                return name.first() == Some(&b'[') && wildcard(&pattern[1..], &name[1..]);
            };
            let Some(&c) = name.first() else { return false };
            let mut set = &pattern[1..end];
            let negate = set.first() == Some(&b'!');
            if negate {
                set = &set[1..];
            }
            let mut hit = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == b'-' {
                    hit |= (set[i]..=set[i + 2]).contains(&c);
                    i += 3;
                } else {
                    hit |= set[i] == c;
                    i += 1;
                }
            }
            hit != negate && wildcard(&pattern[end + 1..], &name[1..])
        }
        Some(&b) => name.first() == Some(&b) && wildcard(&pattern[1..], &name[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<Directive> {
        parse_text(text, Path::new("t.conf")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn error(text: &str) -> String {
        parse_text(text, Path::new("t.conf"))
            .expect_err("a syntax error")
            .to_string()
    }

    /// Directives, nested blocks and positions of each directive's first word.
    #[test]
    fn nested_blocks_and_positions() {
        let tree = parse("http {\n  server {\n    listen 80;\n  }\n}\nworker_processes 1;\n");
        assert_eq!(tree.len(), 2);
        let server = &tree[0].children()[0];
        assert_eq!(server.name, "server");
        let listen = &server.children()[0];
        assert_eq!((listen.name.as_str(), listen.arg(0)), ("listen", "80"));
        assert_eq!((listen.at.line, listen.at.col), (3, 5));
        assert_eq!((tree[1].at.line, tree[1].at.col), (6, 1));
    }

    /// Quotes of both kinds, their escapes, and a backslash nginx leaves alone.
    #[test]
    fn quoted_strings_and_escapes() {
        let tree = parse(
            "add_header X \"a \\\"b\\\" c\";\nreturn 200 'it\\'s';\nrewrite \"^/(\\d+)$\" /x;\n",
        );
        assert_eq!(tree[0].args, ["X", "a \"b\" c"]);
        assert_eq!(tree[1].args, ["200", "it's"]);
        assert_eq!(tree[2].args, ["^/(\\d+)$", "/x"]);
        let tree = parse("s \"x;y{z}\" ;");
        assert_eq!(tree[0].args, ["x;y{z}"], "quoted specials are text");
        let tree = parse("rewrite ^/v\\.(\\d)$ /x\\;y;");
        assert_eq!(
            tree[0].args,
            ["^/v\\.(\\d)$", "/x\\;y"],
            "a bare word keeps the backslashes nginx keeps"
        );
    }

    /// `#` starts a comment outside quotes; inside quotes it is text.
    #[test]
    fn comments() {
        let tree = parse("# top\nlisten 80; # trailing\nadd_header X \"#not\"; #x {\n");
        assert_eq!(tree.len(), 2);
        assert_eq!(tree[1].args, ["X", "#not"]);
    }

    /// Variables, with and without braces, stay as written.
    #[test]
    fn variables() {
        let tree =
            parse("split_clients \"${cookie_uid}\" $v { 10% v2; * v1; }\nproxy_pass http://$v;");
        assert_eq!(tree[0].args, ["${cookie_uid}", "$v"]);
        assert_eq!(tree[0].children()[1].args, ["v1"]);
        let tree = parse("set $x ${a}b;");
        assert_eq!(tree[0].args, ["$x", "${a}b"]);
    }

    /// Each error names the line and column where the problem starts.
    #[test]
    fn error_positions() {
        assert_eq!(
            error("server {\n  listen 80;\n"),
            "t.conf:1:8: this block is never closed (\"}\" missing)"
        );
        assert_eq!(error("listen 80;\n}\n"), "t.conf:2:1: unexpected \"}\"");
        assert_eq!(
            error("a {\n  listen 80\n}\n"),
            "t.conf:2:3: unexpected \"}\": the directive has no \";\""
        );
        assert_eq!(
            error("x \"abc\n\n"),
            "t.conf:1:3: unterminated quoted string"
        );
        assert_eq!(error("  ;"), "t.conf:1:3: unexpected \";\"");
        assert_eq!(
            error("listen 80"),
            "t.conf:1:1: unexpected end of file, expecting \";\" or \"}\""
        );
        assert_eq!(
            error("x \"a\"b;"),
            "t.conf:1:6: unexpected 'b' after a quoted string"
        );
    }

    /// A Lua block is read as Lua: braces in tables, strings and comments, `#` as length.
    #[test]
    fn lua_blocks() {
        let tree = parse(
            "location / {\n  access_by_lua_block {\n    local t = { a = \"}\" } -- }\n    if #t == 0 then ngx.exit(403) end\n  }\n  proxy_pass http://v1;\n}\n",
        );
        let loc = tree[0].children();
        assert_eq!(loc[0].name, "access_by_lua_block");
        assert!(loc[0].raw.as_deref().is_some_and(|c| c.contains("#t == 0")));
        assert_eq!(loc[1].args, ["http://v1"]);
    }

    /// `if ($a = "b")`: a closing parenthesis right after a quote is nginx syntax.
    #[test]
    fn if_conditions() {
        let tree = parse("if ($http_x = \"v2\") { return 403; }");
        assert_eq!(tree[0].args, ["($http_x", "=", "v2", ")"]);
    }

    #[test]
    fn wildcards() {
        for (pattern, name, hit) in [
            ("*.conf", "a.conf", true),
            ("*.conf", "a.conf.bak", false),
            ("proxy-?.conf", "proxy-1.conf", true),
            ("[a-c]*", "beta", true),
            ("[!a-c]*", "beta", false),
            ("*", "", true),
        ] {
            assert_eq!(
                wildcard(pattern.as_bytes(), name.as_bytes()),
                hit,
                "{pattern} {name}"
            );
        }
    }
}
