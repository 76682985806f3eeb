//! How the `strata` command prints: lines for people by default (aligned tables, short
//! summaries), JSON on request, everything on stdout through calls that return an error rather
//! than panic, so that a closed pipe (`strata lsm scan ... | head`) ends the command quietly.

use std::io::Write;

use anyhow::Result;
use serde::Serialize;

/// Writes one line to stdout, returning the error (a closed pipe included) rather than
/// panicking on it as the standard printing macro does.
macro_rules! outln {
    () => {
        $crate::output::line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// [`outln!`]'s implementation.
pub fn line(args: std::fmt::Arguments<'_>) -> Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Prints `value` as one JSON document: indented if `pretty`, else on one line (for a stream
/// of objects, one per line).
pub fn json(value: &impl Serialize, pretty: bool) -> Result<()> {
    let text = if pretty {
        serde_json::to_string_pretty(value)?
    } else {
        serde_json::to_string(value)?
    };
    line(format_args!("{text}"))
}

/// Whether `error` is stdout's reader having gone away: the command ends quietly then, with
/// exit code 0, as `head` expects of the commands it reads from.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// A table of text cells, printed with aligned columns (numbers right-aligned).
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are empty, extra ones dropped).
    pub fn row(&mut self, mut cells: Vec<String>) {
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    fn widths(&self) -> Vec<usize> {
        (0..self.headers.len())
            .map(|c| {
                self.rows
                    .iter()
                    .map(|r| r[c].chars().count())
                    .chain(std::iter::once(self.headers[c].chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect()
    }

    /// A column is right-aligned when every cell in it reads as a number.
    fn numeric(&self) -> Vec<bool> {
        (0..self.headers.len())
            .map(|c| {
                !self.rows.is_empty()
                    && self.rows.iter().all(|r| {
                        let cell = r[c].trim_end_matches(['%', 'x']);
                        !cell.is_empty() && cell.replace([',', '.'], "").parse::<u64>().is_ok()
                    })
            })
            .collect()
    }

    /// A header is shown in capitals.
    fn text(text: &str, header: bool) -> String {
        if header {
            text.to_uppercase()
        } else {
            text.to_owned()
        }
    }

    fn cell(text: &str, width: usize, right: bool) -> String {
        let pad = width.saturating_sub(text.chars().count());
        if right {
            format!("{}{text}", " ".repeat(pad))
        } else {
            format!("{text}{}", " ".repeat(pad))
        }
    }

    /// Columns separated by two spaces, headers in capitals, no borders (as `kubectl get`).
    pub fn plain(&self) -> String {
        let widths = self.widths();
        let numeric = self.numeric();
        let render = |cells: &[String], header: bool| {
            let line: Vec<String> = cells
                .iter()
                .enumerate()
                .map(|(c, text)| {
                    Self::cell(&Self::text(text, header), widths[c], numeric[c] && !header)
                })
                .collect();
            line.join("  ").trim_end().to_owned()
        };
        let mut out = vec![render(&self.headers, true)];
        out.extend(self.rows.iter().map(|r| render(r, false)));
        out.join("\n")
    }

    /// Bordered, as etcdctl's `-w table`.
    pub fn boxed(&self) -> String {
        let widths = self.widths();
        let rule: String = widths
            .iter()
            .map(|w| format!("+{}", "-".repeat(w + 2)))
            .collect::<String>()
            + "+";
        let render = |cells: &[String], header: bool| {
            cells
                .iter()
                .enumerate()
                .map(|(c, text)| {
                    format!(
                        "| {} ",
                        Self::cell(&Self::text(text, header), widths[c], false)
                    )
                })
                .collect::<String>()
                + "|"
        };
        let mut out = vec![rule.clone(), render(&self.headers, true), rule.clone()];
        out.extend(self.rows.iter().map(|r| render(r, false)));
        out.push(rule);
        out.join("\n")
    }
}

/// Prints `name  value` lines with the values aligned, each name indented by two spaces.
pub fn fields(fields: &[(&str, String)]) -> Result<()> {
    let width = fields.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    for (name, value) in fields {
        line(format_args!("  {name:<width$}  {value}"))?;
    }
    Ok(())
}

/// `bytes` for people: `512 B`, `1.5 KiB`, `3.2 MiB`, `1.1 GiB`.
pub fn bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A count with thousands separators: `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// `yes` or `NO` (a failed check stands out).
pub fn yes_no(ok: bool) -> &'static str {
    if ok { "yes" } else { "NO" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_tables_align_columns_and_right_align_numbers() {
        let mut t = Table::new(&["level", "tables", "name"]);
        t.row(vec!["L0".into(), "3".into(), "a".into()]);
        t.row(vec!["L1".into(), "12".into(), "bbb".into()]);
        assert_eq!(
            t.plain(),
            "LEVEL  TABLES  NAME\nL0          3  a\nL1         12  bbb"
        );
    }

    #[test]
    fn boxed_tables_look_like_etcdctl() {
        let mut t = Table::new(&["key", "value"]);
        t.row(vec!["k".into(), "hello".into()]);
        assert_eq!(
            t.boxed(),
            "+-----+-------+\n| KEY | VALUE |\n+-----+-------+\n| k   | hello |\n+-----+-------+"
        );
    }

    #[test]
    fn sizes_and_counts_read_as_people_write_them() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(count(999), "999");
    }
}
