//! Every text table the CLI prints (`plan`, `conformance`, `hold list`, `report list`,
//! a run's report), through one helper on comfy-table: numbers right-aligned with
//! thousands separators, columns that line up whatever the cell widths, the terminal's
//! width on a TTY. A pipe gets plain text with no colour, and so does `NO_COLOR`.

use comfy_table::{presets, Attribute, Cell, CellAlignment, ContentArrangement, Table};

/// How a column's cells line up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers.
    Right,
}

/// A text table under construction: a header, then rows of as many cells.
pub struct TextTable {
    table: Table,
}

impl TextTable {
    /// A table with these columns.
    pub fn new(columns: &[(&str, Align)]) -> Self {
        let mut table = Table::new();
        table
            .load_preset(presets::NOTHING)
            // Shrinks (wrapping cells) to the terminal's width on a TTY; a pipe has no
            // width, and gets every row on one line.
            .set_content_arrangement(ContentArrangement::Dynamic);
        let plain = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        if plain {
            table.force_no_tty();
        }
        table.set_header(columns.iter().map(|(name, _)| {
            let cell = Cell::new(name);
            if plain {
                cell
            } else {
                // Styling is only ever written to a terminal.
                cell.add_attribute(Attribute::Bold)
            }
        }));
        for (i, (_, align)) in columns.iter().enumerate() {
            if let Some(c) = table.column_mut(i) {
                c.set_cell_alignment(match align {
                    Align::Left => CellAlignment::Left,
                    Align::Right => CellAlignment::Right,
                });
            }
        }
        Self { table }
    }

    /// Appends one row (one cell per column).
    pub fn row<I, S>(&mut self, cells: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.table
            .add_row(cells.into_iter().map(|c| Cell::new(c.into())));
        self
    }

    /// The table as lines, each ending in a newline, with no trailing spaces.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for line in self.table.lines() {
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A count with thousands separators: `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_get_thousands_separators() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1_000), "1,000");
        assert_eq!(count(123_456), "123,456");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(u64::MAX), "18,446,744,073,709,551,615");
    }

    #[test]
    fn columns_line_up_and_numbers_align_right() {
        let mut t = TextTable::new(&[("RULE", Align::Left), ("DUE", Align::Right)]);
        // As a pipe would get it, even when the tests run on a terminal.
        t.table.force_no_tty();
        t.row(["a-very-long-rule-name-indeed", &count(123_456)]);
        t.row(["short", "7"]);
        let text = t.render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        let due_end = lines[0].find("DUE").unwrap() + 3;
        assert_eq!(&lines[1][due_end - 7..due_end], "123,456", "{text}");
        assert_eq!(&lines[2][due_end - 1..due_end], "7", "{text}");
        let rule_at = lines[0].find("RULE").unwrap();
        assert_eq!(lines[2].find("short"), Some(rule_at), "{text}");
        assert!(
            !text.contains('\u{1b}'),
            "no escape codes off a terminal: {text:?}"
        );
    }
}
