//! A PKGBUILD read as data, never run: the scalar and array assignments at its top level
//! (`pkgname=…`, `source=(…)`, `sha256sums_x86_64=(…)`) and the names of its functions.
//!
//! A PKGBUILD is a bash script, and the worker catalog server that hands one out is on the
//! network; running it (as upstream's hive did, `build()` included) would run whatever that
//! server says. So this reader understands only the quoting of words (`'…'`, `"…"`, `\x`),
//! comments, arrays over several lines and function bodies (skipped), and substitutes
//! `$pkgver`, `${pkgver}`, `$pkgname` and `${pkgname}` textually. Any other expansion
//! (`$other`, `${x//a/b}`, `$(…)`, backquotes) is kept as an unreadable part, and reading a
//! value that holds one is an error naming it; statements that are not assignments or
//! function definitions are skipped.

use std::collections::BTreeMap;

/// A PKGBUILD that cannot be read as data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PkgbuildError {
    /// The text ends inside a quote, an array or a function.
    #[error("line {line}: {what} is not closed")]
    Unclosed {
        /// Where it opened (1-based).
        line: usize,
        /// What is open.
        what: &'static str,
    },
    /// A value uses an expansion this reader does not do.
    #[error(
        "`{name}` uses {expansion}, which is not read (only $pkgver and $pkgname are substituted)"
    )]
    Expansion {
        /// The variable read.
        name: String,
        /// The expansion as written.
        expansion: String,
    },
}

/// One part of a word: text, a substitution, or an expansion that is not done.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Variable(String),
    Unsupported(String),
}

type Word = Vec<Part>;

/// A value assigned at the top level.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Scalar(Word),
    Array(Vec<Word>),
}

/// What a PKGBUILD assigns and defines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pkgbuild {
    values: BTreeMap<String, Value>,
    functions: Vec<String>,
}

/// One entry of `source` (or `source_<arch>`) with its checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceItem {
    /// The file name given with `name::url`, if any.
    pub file_name: Option<String>,
    /// The URL or file (after `name::`).
    pub location: String,
    /// The matching `sha256sums` entry: 64 lowercase hex digits, `SKIP`, or `None` when
    /// the array is shorter.
    pub sha256: Option<String>,
}

impl SourceItem {
    /// Whether this is a plain `http(s)://` download (not `git+https://…`, not a local file).
    pub fn is_download(&self) -> bool {
        let lower = self.location.to_ascii_lowercase();
        lower.starts_with("https://") || lower.starts_with("http://")
    }

    /// The checksum when it is a real digest (not `SKIP`, not missing).
    pub fn digest(&self) -> Option<&str> {
        self.sha256
            .as_deref()
            .filter(|d| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()))
    }
}

impl Pkgbuild {
    /// Reads `text`.
    pub fn parse(text: &str) -> Result<Self, PkgbuildError> {
        Reader::new(text).read()
    }

    /// Whether the PKGBUILD defines function `name` (`build`, `package`, …).
    pub fn has_function(&self, name: &str) -> bool {
        self.functions.iter().any(|f| f == name)
    }

    /// A scalar's value (an array's first element, as bash gives `$array`).
    pub fn scalar(&self, name: &str) -> Result<Option<String>, PkgbuildError> {
        let word = match self.values.get(name) {
            None => return Ok(None),
            Some(Value::Scalar(word)) => word,
            Some(Value::Array(words)) => match words.first() {
                Some(word) => word,
                None => return Ok(Some(String::new())),
            },
        };
        self.resolve(name, word).map(Some)
    }

    /// An array's elements (a scalar reads as an array of one, as in bash).
    pub fn array(&self, name: &str) -> Result<Option<Vec<String>>, PkgbuildError> {
        match self.values.get(name) {
            None => Ok(None),
            Some(Value::Scalar(word)) => Ok(Some(vec![self.resolve(name, word)?])),
            Some(Value::Array(words)) => words
                .iter()
                .map(|word| self.resolve(name, word))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
        }
    }

    /// The sources for architecture `arch` with their sha256 sums, as makepkg pairs them:
    /// `source` with `sha256sums`, then `source_<arch>` with `sha256sums_<arch>`.
    pub fn sources_for(&self, arch: &str) -> Result<Vec<SourceItem>, PkgbuildError> {
        let mut items = Vec::new();
        for suffix in [String::new(), format!("_{arch}")] {
            let sources = self.array(&format!("source{suffix}"))?.unwrap_or_default();
            let sums = self
                .array(&format!("sha256sums{suffix}"))?
                .unwrap_or_default();
            for (index, source) in sources.into_iter().enumerate() {
                let (file_name, location) = match source.split_once("::") {
                    Some((name, location)) => (Some(name.to_owned()), location.to_owned()),
                    None => (None, source),
                };
                let sha256 = sums.get(index).map(|sum| {
                    let sum = sum.trim();
                    if sum.eq_ignore_ascii_case("skip") {
                        "SKIP".to_owned()
                    } else {
                        sum.to_ascii_lowercase()
                    }
                });
                items.push(SourceItem {
                    file_name,
                    location,
                    sha256,
                });
            }
        }
        Ok(items)
    }

    fn resolve(&self, name: &str, word: &Word) -> Result<String, PkgbuildError> {
        let mut text = String::new();
        for part in word {
            match part {
                Part::Text(t) => text.push_str(t),
                Part::Variable(var) if matches!(var.as_str(), "pkgver" | "pkgname") => {
                    // The substituted values themselves must be plain text (no recursion).
                    match self.values.get(var.as_str()) {
                        Some(Value::Scalar(value)) => {
                            for inner in value {
                                match inner {
                                    Part::Text(t) => text.push_str(t),
                                    other => {
                                        return Err(PkgbuildError::Expansion {
                                            name: var.clone(),
                                            expansion: describe(other),
                                        });
                                    }
                                }
                            }
                        }
                        _ => {
                            return Err(PkgbuildError::Expansion {
                                name: name.to_owned(),
                                expansion: format!("${var}, which is not assigned as a scalar"),
                            });
                        }
                    }
                }
                other => {
                    return Err(PkgbuildError::Expansion {
                        name: name.to_owned(),
                        expansion: describe(other),
                    });
                }
            }
        }
        Ok(text)
    }
}

fn describe(part: &Part) -> String {
    match part {
        Part::Text(t) => t.clone(),
        Part::Variable(v) => format!("${v}"),
        Part::Unsupported(u) => u.clone(),
    }
}

struct Reader<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
}

impl<'a> Reader<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            chars: text.chars().peekable(),
            line: 1,
        }
    }

    fn peek(&mut self) -> Option<char> {
        self.chars.peek().copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.chars.next();
        if c == Some('\n') {
            self.line += 1;
        }
        c
    }

    fn read(mut self) -> Result<Pkgbuild, PkgbuildError> {
        let mut pkgbuild = Pkgbuild::default();
        loop {
            // Between statements.
            match self.peek() {
                None => return Ok(pkgbuild),
                Some(c) if c.is_whitespace() || c == ';' => {
                    self.next();
                    continue;
                }
                Some('#') => {
                    self.skip_line();
                    continue;
                }
                Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
                Some(_) => {
                    self.skip_statement()?;
                    continue;
                }
            }
            let name = self.name();
            match self.peek() {
                Some('=') => {
                    self.next();
                    let value = self.value()?;
                    pkgbuild.values.insert(name, value);
                }
                Some('+') => {
                    self.next();
                    if self.peek() != Some('=') {
                        self.skip_statement()?;
                        continue;
                    }
                    self.next();
                    let added = self.value()?;
                    let joined = match (pkgbuild.values.remove(&name), added) {
                        (Some(Value::Array(mut old)), Value::Array(new)) => {
                            old.extend(new);
                            Value::Array(old)
                        }
                        (Some(Value::Scalar(mut old)), Value::Scalar(new)) => {
                            old.extend(new);
                            Value::Scalar(old)
                        }
                        (Some(Value::Scalar(old)), Value::Array(new)) => {
                            Value::Array(std::iter::once(old).chain(new).collect())
                        }
                        (_, added) => added,
                    };
                    pkgbuild.values.insert(name, joined);
                }
                _ => {
                    if self.function_header() {
                        self.skip_body()?;
                        pkgbuild.functions.push(name);
                    } else {
                        self.skip_statement()?;
                    }
                }
            }
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                name.push(c);
                self.next();
            } else {
                break;
            }
        }
        name
    }

    /// After a name: `()` and blanks, then the body's `{`. Consumes the header when it is one.
    fn function_header(&mut self) -> bool {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.next();
        }
        if self.peek() != Some('(') {
            return false;
        }
        self.next();
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.next();
        }
        if self.peek() != Some(')') {
            return false;
        }
        self.next();
        while matches!(self.peek(), Some(c) if c.is_whitespace()) {
            self.next();
        }
        self.peek() == Some('{')
    }

    /// Skips a `{ … }` body, quotes and comments included.
    fn skip_body(&mut self) -> Result<(), PkgbuildError> {
        let opened = self.line;
        let mut depth = 0usize;
        let mut at_word_start = true;
        while let Some(c) = self.next() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        return Ok(());
                    }
                }
                '\\' => {
                    self.next();
                }
                '\'' => self.skip_until('\'', opened)?,
                '"' => self.skip_double_quoted(opened)?,
                '#' if at_word_start => self.skip_line(),
                _ => {}
            }
            at_word_start = c.is_whitespace() || matches!(c, ';' | '(' | '{');
        }
        Err(PkgbuildError::Unclosed {
            line: opened,
            what: "a function body",
        })
    }

    fn skip_until(&mut self, end: char, opened: usize) -> Result<(), PkgbuildError> {
        while let Some(c) = self.next() {
            if c == end {
                return Ok(());
            }
        }
        Err(PkgbuildError::Unclosed {
            line: opened,
            what: "a quote",
        })
    }

    fn skip_double_quoted(&mut self, opened: usize) -> Result<(), PkgbuildError> {
        while let Some(c) = self.next() {
            match c {
                '\\' => {
                    self.next();
                }
                '"' => return Ok(()),
                _ => {}
            }
        }
        Err(PkgbuildError::Unclosed {
            line: opened,
            what: "a quote",
        })
    }

    fn skip_line(&mut self) {
        while let Some(c) = self.next() {
            if c == '\n' {
                return;
            }
        }
    }

    /// Skips a statement that is not read (a command, a test): to the end of its line,
    /// quotes and line continuations respected.
    fn skip_statement(&mut self) -> Result<(), PkgbuildError> {
        let opened = self.line;
        while let Some(c) = self.next() {
            match c {
                '\n' => return Ok(()),
                '\\' => {
                    self.next();
                }
                '\'' => self.skip_until('\'', opened)?,
                '"' => self.skip_double_quoted(opened)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// The value after `=`: an array `( … )` or one word.
    fn value(&mut self) -> Result<Value, PkgbuildError> {
        if self.peek() != Some('(') {
            return Ok(Value::Scalar(self.word()?));
        }
        let opened = self.line;
        self.next();
        let mut words = Vec::new();
        loop {
            match self.peek() {
                None => {
                    return Err(PkgbuildError::Unclosed {
                        line: opened,
                        what: "an array",
                    });
                }
                Some(')') => {
                    self.next();
                    return Ok(Value::Array(words));
                }
                Some(c) if c.is_whitespace() => {
                    self.next();
                }
                Some('#') => self.skip_line(),
                Some(_) => words.push(self.word()?),
            }
        }
    }

    /// One shell word: up to unquoted blank, newline, `;` or `)`.
    fn word(&mut self) -> Result<Word, PkgbuildError> {
        let mut parts: Word = Vec::new();
        let mut text = String::new();
        loop {
            match self.peek() {
                None => break,
                Some(c) if c.is_whitespace() || c == ';' || c == ')' => break,
                Some('\'') => {
                    let opened = self.line;
                    self.next();
                    loop {
                        match self.next() {
                            None => {
                                return Err(PkgbuildError::Unclosed {
                                    line: opened,
                                    what: "a quote",
                                });
                            }
                            Some('\'') => break,
                            Some(c) => text.push(c),
                        }
                    }
                }
                Some('"') => {
                    let opened = self.line;
                    self.next();
                    loop {
                        match self.peek() {
                            None => {
                                return Err(PkgbuildError::Unclosed {
                                    line: opened,
                                    what: "a quote",
                                });
                            }
                            Some('"') => {
                                self.next();
                                break;
                            }
                            Some('\\') => {
                                self.next();
                                match self.next() {
                                    Some('\n') => {}
                                    Some(c @ ('"' | '\\' | '$' | '`')) => text.push(c),
                                    Some(c) => {
                                        text.push('\\');
                                        text.push(c);
                                    }
                                    None => {}
                                }
                            }
                            Some('$') | Some('`') => self.expansion(&mut parts, &mut text),
                            Some(c) => {
                                self.next();
                                text.push(c);
                            }
                        }
                    }
                }
                Some('\\') => {
                    self.next();
                    match self.next() {
                        Some('\n') | None => {}
                        Some(c) => text.push(c),
                    }
                }
                Some('$') | Some('`') => self.expansion(&mut parts, &mut text),
                Some(c) => {
                    self.next();
                    text.push(c);
                }
            }
        }
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(parts)
    }

    /// A `$…` or backquote at the reader's position, as a part of the word being read.
    fn expansion(&mut self, parts: &mut Word, text: &mut String) {
        fn flush(parts: &mut Word, text: &mut String) {
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(text)));
            }
        }
        let first = self.next();
        if first == Some('`') {
            flush(parts, text);
            let mut raw = String::from("`");
            while let Some(c) = self.next() {
                raw.push(c);
                if c == '`' {
                    break;
                }
            }
            parts.push(Part::Unsupported(raw));
            return;
        }
        match self.peek() {
            Some('{') => {
                self.next();
                let mut inner = String::new();
                let mut closed = false;
                while let Some(c) = self.next() {
                    if c == '}' {
                        closed = true;
                        break;
                    }
                    inner.push(c);
                }
                flush(parts, text);
                let simple = closed
                    && !inner.is_empty()
                    && inner.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                parts.push(if simple {
                    Part::Variable(inner)
                } else {
                    Part::Unsupported(format!("${{{inner}}}"))
                });
            }
            Some('(') => {
                flush(parts, text);
                let mut raw = String::from("$");
                let mut depth = 0usize;
                while let Some(c) = self.next() {
                    raw.push(c);
                    match c {
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                parts.push(Part::Unsupported(raw));
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                flush(parts, text);
                let name = self.name();
                parts.push(Part::Variable(name));
            }
            Some(c) if c.is_ascii_digit() || "@*#?$!-".contains(c) => {
                self.next();
                flush(parts, text);
                parts.push(Part::Unsupported(format!("${c}")));
            }
            // A lone `$` is a literal dollar in bash.
            _ => text.push('$'),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPSTREAM_CPU: &str = r#"# PKGBUILD for llm-worker-rbee (CPU variant)
# Maintainer: rbee Core Team

pkgname=llm-worker-rbee-cpu
pkgver=0.1.0
pkgrel=1
pkgdesc="LLM worker for rbee system (CPU-only)"
arch=('x86_64' 'aarch64')
url="https://github.com/veighnsche/llama-orch"
license=('GPL-3.0-or-later')
depends=('gcc')
makedepends=('rust' 'cargo' 'git')
source=("git+https://github.com/veighnsche/llama-orch.git#branch=main")
sha256sums=('SKIP')

build() {
    cd "$srcdir/llama-orch/bin/30_llm_worker_rbee"
    cargo build --release --no-default-features --features cpu
}

package() {
    cd "$srcdir/llama-orch"
    install -Dm755 "bin/30_llm_worker_rbee/target/release/llm-worker-rbee" \
        "$pkgdir/usr/local/bin/$pkgname"
}

check() {
    cd "$srcdir/llama-orch/bin/30_llm_worker_rbee"
    cargo test --release --no-default-features --features cpu || true
}
"#;

    const PREBUILT: &str = r#"# Prebuilt variant: the release archives, one per architecture.
pkgname=llm-worker-rbee-cpu-bin
_upstream=llm-worker-rbee-cpu   # a helper variable
pkgver=0.2.1
pkgrel=2
pkgdesc='LLM worker for rbee (CPU, prebuilt) { not a body }'
arch=(x86_64
      aarch64)   # both
provides=("${pkgname%-bin}")
source=("LICENSE::https://example.org/rbee/LICENSE")
sha256sums=('SKIP')
source_x86_64=(
    # the x86_64 archive
    "https://example.org/rbee/v${pkgver}/$pkgname-${pkgver}-linux-x86_64.tar.gz"
)
sha256sums_x86_64=(
    'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'
)
source_aarch64=("https://example.org/rbee/v$pkgver/llm-worker-rbee-cpu-bin-$pkgver-linux-aarch64.tar.gz")
sha256sums_aarch64=("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb")
options+=('!strip')

package() {
    # a brace in a comment { and in quotes "}" must not end the body
    install -Dm755 "$srcdir/llm-worker-rbee-cpu" "$pkgdir/usr/bin/${pkgname%-bin}"
    echo '}' > /dev/null
}
"#;

    #[test]
    fn reads_upstreams_source_pkgbuild_without_running_it() {
        let p = Pkgbuild::parse(UPSTREAM_CPU).unwrap();
        assert_eq!(
            p.scalar("pkgname").unwrap().as_deref(),
            Some("llm-worker-rbee-cpu")
        );
        assert_eq!(p.scalar("pkgver").unwrap().as_deref(), Some("0.1.0"));
        assert_eq!(
            p.scalar("pkgdesc").unwrap().as_deref(),
            Some("LLM worker for rbee system (CPU-only)")
        );
        assert_eq!(
            p.array("arch").unwrap().unwrap(),
            vec!["x86_64".to_owned(), "aarch64".to_owned()]
        );
        assert!(p.has_function("build"));
        assert!(p.has_function("package"));
        assert!(p.has_function("check"));
        let sources = p.sources_for("x86_64").unwrap();
        assert_eq!(sources.len(), 1);
        assert_eq!(
            sources[0].location,
            "git+https://github.com/veighnsche/llama-orch.git#branch=main"
        );
        assert!(!sources[0].is_download());
        assert_eq!(sources[0].sha256.as_deref(), Some("SKIP"));
        assert_eq!(sources[0].digest(), None);
        // Nothing in a function body leaked out as an assignment.
        assert_eq!(p.scalar("cd").unwrap(), None);
    }

    #[test]
    fn reads_arch_variants_multi_line_arrays_quotes_and_comments() {
        let p = Pkgbuild::parse(PREBUILT).unwrap();
        assert_eq!(
            p.scalar("pkgdesc").unwrap().as_deref(),
            Some("LLM worker for rbee (CPU, prebuilt) { not a body }")
        );
        assert_eq!(p.array("arch").unwrap().unwrap(), ["x86_64", "aarch64"]);
        assert_eq!(
            p.scalar("_upstream").unwrap().as_deref(),
            Some("llm-worker-rbee-cpu")
        );
        assert_eq!(p.array("options").unwrap().unwrap(), ["!strip"]);
        assert!(!p.has_function("build"));
        assert!(p.has_function("package"));

        let x86 = p.sources_for("x86_64").unwrap();
        assert_eq!(x86.len(), 2);
        assert_eq!(x86[0].file_name.as_deref(), Some("LICENSE"));
        assert_eq!(x86[0].location, "https://example.org/rbee/LICENSE");
        assert_eq!(x86[0].digest(), None);
        assert_eq!(
            x86[1].location,
            "https://example.org/rbee/v0.2.1/llm-worker-rbee-cpu-bin-0.2.1-linux-x86_64.tar.gz"
        );
        assert!(x86[1].is_download());
        assert_eq!(x86[1].digest(), Some("a".repeat(64).as_str()));

        let arm = p.sources_for("aarch64").unwrap();
        assert_eq!(
            arm[1].location,
            "https://example.org/rbee/v0.2.1/llm-worker-rbee-cpu-bin-0.2.1-linux-aarch64.tar.gz"
        );
        assert_eq!(arm[1].digest(), Some("b".repeat(64).as_str()));
        assert_eq!(p.sources_for("riscv64").unwrap().len(), 1);
        // `${pkgname%-bin}` is an expansion the reader does not do: reading it says so.
        let error = p.array("provides").unwrap_err().to_string();
        assert!(error.contains("${pkgname%-bin}"), "{error}");
    }

    #[test]
    fn only_pkgver_and_pkgname_are_substituted() {
        let p = Pkgbuild::parse(
            "pkgver=1.2\npkgname=w\n_base=https://x\nsource=(\"$_base/w-$pkgver.tgz\")\n\
             a='$pkgver'\nb=\"$(curl evil)\"\nc=`id`\nd=\\$pkgver\ne=cost\\ \\$5\n",
        )
        .unwrap();
        let error = p.array("source").unwrap_err();
        assert!(error.to_string().contains("$_base"), "{error}");
        // Single quotes and escapes keep a dollar literal, as bash does.
        assert_eq!(p.scalar("a").unwrap().as_deref(), Some("$pkgver"));
        assert_eq!(p.scalar("d").unwrap().as_deref(), Some("$pkgver"));
        assert_eq!(p.scalar("e").unwrap().as_deref(), Some("cost $5"));
        assert!(
            p.scalar("b")
                .unwrap_err()
                .to_string()
                .contains("$(curl evil)")
        );
        assert!(p.scalar("c").unwrap_err().to_string().contains("`id`"));
    }

    #[test]
    fn statements_and_appends() {
        let p = Pkgbuild::parse(
            "[[ -n $X ]] && source=(evil)\nsource=(a)\nsource+=( b 'c d' ) ; pkgver=3\n\
             if true; then\n  echo hi\nfi\n",
        )
        .unwrap();
        assert_eq!(p.array("source").unwrap().unwrap(), ["a", "b", "c d"]);
        assert_eq!(p.scalar("pkgver").unwrap().as_deref(), Some("3"));
    }

    #[test]
    fn unclosed_things_are_errors() {
        for (text, what) in [
            ("source=('a'\n", "an array"),
            ("pkgdesc=\"open\n", "a quote"),
            ("build() {\n  make\n", "a function body"),
        ] {
            let error = Pkgbuild::parse(text).unwrap_err();
            assert!(
                matches!(error, PkgbuildError::Unclosed { what: w, line: 1 } if w == what),
                "{text:?}: {error:?}"
            );
        }
    }
}
