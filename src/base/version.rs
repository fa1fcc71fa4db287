//! DKMS's VER() ordering of module and kernel versions: digit runs are compared as numbers,
//! everything else as text, so `1.10` sorts after `1.9` and `6.1.0-56` after `6.1.0-9`.

use std::cmp::Ordering;

/// The sort key DKMS builds: every run of digits left-padded with zeros to at least three
/// digits, then compared as a plain string (so runs longer than three digits still compare
/// lexically, exactly like DKMS).
pub fn ver_key(version: &str) -> String {
    let mut out = String::with_capacity(version.len() + 8);
    let mut digits = String::new();
    for c in version.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            flush_digits(&mut out, &mut digits);
            out.push(c);
        }
    }
    flush_digits(&mut out, &mut digits);
    out
}

fn flush_digits(out: &mut String, digits: &mut String) {
    if !digits.is_empty() {
        for _ in digits.len()..3 {
            out.push('0');
        }
        out.push_str(digits);
        digits.clear();
    }
}

/// Compares two versions the way DKMS's VER() does.
pub fn ver_cmp(a: &str, b: &str) -> Ordering {
    ver_key(a).cmp(&ver_key(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads_digit_runs() {
        assert_eq!(ver_key("2.6.9-1cvs"), "002.006.009-001cvs");
        assert_eq!(ver_key("6.1.0-56-amd64"), "006.001.000-056-amd064");
    }

    #[test]
    fn numeric_order() {
        assert_eq!(ver_cmp("1.10", "1.9"), Ordering::Greater);
        assert_eq!(
            ver_cmp("6.1.0-56-amd64", "6.1.0-9-amd64"),
            Ordering::Greater
        );
        assert_eq!(ver_cmp("0.12.5", "0.12.5"), Ordering::Equal);
        assert_eq!(ver_cmp("1.0", "1.0a"), Ordering::Less);
    }

    #[test]
    fn long_digit_runs_compare_as_text_like_dkms() {
        // 1000 → "1000", 999 → "999": as strings "1000" < "999", which is what DKMS does.
        assert_eq!(ver_cmp("1000", "999"), Ordering::Less);
    }
}
