//! Config errors that point at the file, line, column and field.

use std::fmt;
use std::path::{Path, PathBuf};

use toml_edit::{ImDocument, Item};

/// One step of a path into the document: `rules[2].retain` is `[Key(rules), Index(2), Key(retain)]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    /// A table key.
    Key(String),
    /// An array index.
    Index(usize),
}

/// A path into the config document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath(pub Vec<Seg>);

impl FieldPath {
    /// The path of `key` below this one.
    pub fn key(&self, key: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(key.to_owned()));
        p
    }

    /// The path of element `index` below this one.
    pub fn index(&self, index: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(index));
        p
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// A mistake in the config file, with its position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{column}: {field}: {message}", file.display())]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
    /// The field, e.g. `rules[2].retain` (`(document)` when no field applies).
    pub field: String,
    /// What is wrong and what was expected.
    pub message: String,
}

/// Builds positioned errors for one file.
pub struct Locator<'a> {
    file: &'a Path,
    text: &'a str,
    doc: Option<ImDocument<&'a str>>,
}

impl<'a> Locator<'a> {
    /// A locator over `text`, read from `file`.
    pub fn new(file: &'a Path, text: &'a str) -> Self {
        Self {
            file,
            text,
            doc: ImDocument::parse(text).ok(),
        }
    }

    /// An error at byte `offset` about `field`.
    pub fn at_offset(&self, offset: usize, field: &str, message: impl Into<String>) -> ConfigError {
        let (line, column) = line_col(self.text, offset);
        ConfigError {
            file: self.file.to_owned(),
            line,
            column,
            field: field.to_owned(),
            message: message.into(),
        }
    }

    /// An error about the value at `path` (or its nearest enclosing item that exists).
    pub fn at(&self, path: &FieldPath, message: impl Into<String>) -> ConfigError {
        let offset = self.offset_of(path).unwrap_or(0);
        let field = if path.0.is_empty() {
            "(document)".to_owned()
        } else {
            path.to_string()
        };
        self.at_offset(offset, &field, message)
    }

    /// Byte offset of the item at `path`, or of the closest ancestor that exists.
    pub fn offset_of(&self, path: &FieldPath) -> Option<usize> {
        let doc = self.doc.as_ref()?;
        let mut item: &Item = doc.as_item();
        let mut best = None;
        for seg in &path.0 {
            let next = match seg {
                Seg::Key(k) => item.get(k.as_str()),
                Seg::Index(i) => item.get(*i),
            };
            let Some(next) = next else { break };
            if let Some(span) = next.span() {
                best = Some(span.start);
            }
            item = next;
        }
        best
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while offset > 0 && !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// The key written on the line containing `offset`, if the line looks like `key = …`.
pub fn key_on_line(text: &str, offset: usize) -> Option<String> {
    let offset = floor_char_boundary(text, offset.min(text.len()));
    let start = text[..offset].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let end = text[offset..]
        .find('\n')
        .map(|i| offset + i)
        .unwrap_or(text.len());
    let line = &text[start..end];
    if let Some(header) = line.trim().strip_prefix('[') {
        let name = header.trim_matches(|c| c == '[' || c == ']' || c == ' ');
        return (!name.is_empty()).then(|| name.to_owned());
    }
    let key = line.split('=').next()?.trim();
    let valid = !key.is_empty()
        && line.contains('=')
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '"'));
    let key = key.trim_matches('"');
    (valid && !key.is_empty()).then(|| key.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column() {
        let text = "a = 1\nbb = 2\n  é = 3\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 11), (2, 6));
        assert_eq!(line_col(text, text.find('=').unwrap()), (1, 3));
    }

    #[test]
    fn locates_array_of_tables_fields() {
        let text = "[audit]\nstore = \"app\"\n\n[[rules]]\nname = \"a\"\n\n[[rules]]\nname = \"b\"\nretain = \"x\"\n";
        let loc = Locator::new(Path::new("r.toml"), text);
        let path = FieldPath::default().key("rules").index(1).key("retain");
        let err = loc.at(&path, "bad");
        assert_eq!((err.line, err.column), (9, 10));
        assert_eq!(err.field, "rules[1].retain");
        let missing = FieldPath::default().key("rules").index(1).key("category");
        let err = loc.at(&missing, "missing");
        assert_eq!(err.line, 7, "falls back to the [[rules]] header");
    }
}
