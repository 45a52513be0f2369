//! Sizes as people read them, in binary units (KiB, MiB, GiB): the command line and the
//! hive's own narration say them the same way.

/// A byte count: `512 B`, `1.5 KiB`, `516.4 KiB`, `12.3 MiB`, `3.00 GiB`.
pub fn bytes(count: u64) -> String {
    const KIB: f64 = 1024.0;
    let n = count as f64;
    if n >= KIB * KIB * KIB {
        format!("{:.2} GiB", n / (KIB * KIB * KIB))
    } else if n >= KIB * KIB {
        format!("{:.1} MiB", n / (KIB * KIB))
    } else if n >= KIB {
        format!("{:.1} KiB", n / KIB)
    } else {
        format!("{count} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_in_binary_units_and_small_ones_are_not_zero() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(528_793), "516.4 KiB");
        assert_eq!(bytes(256 * 1024 * 1024), "256.0 MiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.00 GiB");
    }
}
