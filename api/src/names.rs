//! Kubernetes object names: the DNS-1123 label (namespaces, service accounts, most
//! names) and subdomain (names that may hold dots). Errors quote the name and say
//! what it must be.

/// DNS-1123 label (namespaces, most names).
pub fn dns_label(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 63 {
        return Err(format!("{s:?} must be 1 to 63 characters"));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || s.starts_with('-')
        || s.ends_with('-')
    {
        return Err(format!(
            "{s:?} must be lowercase letters, digits and '-', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// DNS-1123 subdomain (object names that may hold dots).
pub fn dns_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err(format!("{s:?} must be 1 to 253 characters"));
    }
    for part in s.split('.') {
        dns_label(part).map_err(|_| {
            format!("{s:?} must be lowercase letters, digits, '-' and '.', in labels of 1 to 63")
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_subdomains() {
        assert!(dns_label("cart-v2").is_ok());
        for bad in ["", "-a", "a-", "Cart", "a.b", &"a".repeat(64)] {
            assert!(dns_label(bad).is_err(), "{bad:?}");
        }
        assert!(dns_subdomain("cart.shop").is_ok());
        assert!(dns_subdomain("cart..shop").is_err());
    }
}
