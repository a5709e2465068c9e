//! A small Rust lexer, just enough to know for every line how deep it sits in
//! braces and whether the innermost block is a function body: comments, strings
//! (raw ones too), char literals and lifetimes are skipped, so braces inside them
//! do not count.

/// What one line of a Rust file sits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineInfo {
    /// Open braces at the start of the line.
    pub depth: usize,
    /// Whether the innermost open block at the start of the line is a function body.
    pub in_fn_body: bool,
    /// The fewest open braces at any point of the line (a `}` that closes a block lowers it).
    pub min_depth: usize,
}

/// Line facts for `text`, one per line (`str::lines` numbering).
pub fn line_infos(text: &str) -> Vec<LineInfo> {
    let chars: Vec<char> = text.chars().collect();
    let mut lexer = Lexer {
        chars: &chars,
        pos: 0,
        stack: Vec::new(),
        header: String::new(),
        infos: Vec::new(),
    };
    lexer.start_line();
    lexer.run();
    let n_lines = text.lines().count();
    lexer.infos.truncate(n_lines.max(1));
    lexer.infos
}

struct Lexer<'a> {
    chars: &'a [char],
    pos: usize,
    /// One entry per open brace: whether it opened a function body.
    stack: Vec<bool>,
    /// The code since the last `;`, `{` or `}`: does it declare a `fn`?
    header: String,
    infos: Vec<LineInfo>,
}

impl Lexer<'_> {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    fn start_line(&mut self) {
        self.infos.push(LineInfo {
            depth: self.stack.len(),
            in_fn_body: self.stack.last().copied().unwrap_or(false),
            min_depth: self.stack.len(),
        });
    }

    /// Advances one char, opening a new line record after a newline.
    fn bump(&mut self) {
        if self.chars[self.pos] == '\n' {
            self.pos += 1;
            self.start_line();
        } else {
            self.pos += 1;
        }
    }

    fn run(&mut self) {
        while self.pos < self.chars.len() {
            let c = self.chars[self.pos];
            match c {
                '/' if self.peek(1) == Some('/') => self.skip_line_comment(),
                '/' if self.peek(1) == Some('*') => self.skip_block_comment(),
                '"' => self.skip_string(),
                'r' | 'b' if self.raw_string_ahead() => self.skip_raw_string(),
                '\'' => self.skip_char_or_lifetime(),
                '{' => {
                    let is_fn = declares_fn(&self.header);
                    self.stack.push(is_fn);
                    self.header.clear();
                    self.bump();
                }
                '}' => {
                    self.stack.pop();
                    let info = self.infos.last_mut().expect("a line record");
                    info.min_depth = info.min_depth.min(self.stack.len());
                    self.header.clear();
                    self.bump();
                }
                ';' => {
                    self.header.clear();
                    self.bump();
                }
                _ => {
                    self.header.push(c);
                    self.bump();
                }
            }
        }
    }

    fn skip_line_comment(&mut self) {
        while self.pos < self.chars.len() && self.chars[self.pos] != '\n' {
            self.pos += 1;
        }
    }

    fn skip_block_comment(&mut self) {
        let mut depth = 0usize;
        while self.pos < self.chars.len() {
            if self.peek(0) == Some('/') && self.peek(1) == Some('*') {
                depth += 1;
                self.pos += 2;
            } else if self.peek(0) == Some('*') && self.peek(1) == Some('/') {
                depth -= 1;
                self.pos += 2;
                if depth == 0 {
                    return;
                }
            } else {
                self.bump();
            }
        }
    }

    fn skip_string(&mut self) {
        self.bump(); // the opening quote
        while self.pos < self.chars.len() {
            match self.chars[self.pos] {
                '\\' => {
                    self.bump();
                    if self.pos < self.chars.len() {
                        self.bump();
                    }
                }
                '"' => {
                    self.bump();
                    return;
                }
                _ => self.bump(),
            }
        }
    }

    /// `r"`, `r#"`, `br"`, `br#"` where the `r`/`b` starts a token.
    fn raw_string_ahead(&self) -> bool {
        let prev_is_ident = self.pos > 0 && is_ident(self.chars[self.pos - 1]);
        if prev_is_ident {
            return false;
        }
        let mut i = self.pos;
        if self.chars[i] == 'b' {
            i += 1;
        }
        if self.chars.get(i) != Some(&'r') {
            return false;
        }
        i += 1;
        while self.chars.get(i) == Some(&'#') {
            i += 1;
        }
        self.chars.get(i) == Some(&'"')
    }

    fn skip_raw_string(&mut self) {
        while self.chars[self.pos] != '#' && self.chars[self.pos] != '"' {
            self.pos += 1;
        }
        let mut hashes = 0;
        while self.chars[self.pos] == '#' {
            hashes += 1;
            self.pos += 1;
        }
        self.bump(); // the opening quote
        while self.pos < self.chars.len() {
            if self.chars[self.pos] == '"'
                && (1..=hashes).all(|k| self.chars.get(self.pos + k) == Some(&'#'))
            {
                self.pos += 1 + hashes;
                return;
            }
            self.bump();
        }
    }

    /// `'x'`, `'\n'`, `'\u{7f}'` are chars; `'a` in `&'a str` is a lifetime.
    fn skip_char_or_lifetime(&mut self) {
        if self.peek(1) == Some('\\') {
            self.pos += 2;
            while self.pos < self.chars.len() && self.chars[self.pos] != '\'' {
                self.pos += 1;
            }
            self.pos += 1;
        } else if self.peek(2) == Some('\'') {
            self.pos += 3;
        } else {
            self.pos += 1;
        }
    }
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Whether a block header (the code before a `{`) declares a function.
fn declares_fn(header: &str) -> bool {
    header
        .split(|c: char| !is_ident(c))
        .any(|word| word == "fn")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depths_and_function_bodies() {
        let text = "impl A {\n    fn f(&self) -> u8 {\n        let s = \"{\";\n        if true {\n            1\n        } else { 2 }\n    }\n}\n";
        let infos = line_infos(text);
        assert_eq!(infos.len(), 8);
        assert_eq!((infos[1].depth, infos[1].in_fn_body), (1, false));
        assert_eq!((infos[2].depth, infos[2].in_fn_body), (2, true));
        assert_eq!((infos[4].depth, infos[4].in_fn_body), (3, false));
        assert_eq!(infos[6].min_depth, 1);
        assert_eq!(infos[7].depth, 1);
    }

    #[test]
    fn comments_chars_lifetimes_and_raw_strings_hide_braces() {
        let text = "fn f<'a>(x: &'a str) -> char {\n    // {\n    /* { */ let _ = r#\"}\"#;\n    '{'\n}\nstruct S;\n";
        let infos = line_infos(text);
        assert!(infos[1].in_fn_body && infos[3].in_fn_body);
        assert_eq!(infos[3].depth, 1);
        assert_eq!(infos[5].depth, 0);
    }
}
