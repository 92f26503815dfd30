//! Static vocabularies the generated tenant draws from: realistic names, not random noise, so that
//! mapped output looks like what a security team would see.

/// (queryName, group suffix, CWE, description stem)
pub const SAST_QUERIES: &[(&str, &str, u32, &str)] = &[
    (
        "SQL_Injection",
        "High_Risk",
        89,
        "The application constructs an SQL query by embedding an untrusted string into the query without proper sanitization.",
    ),
    (
        "Reflected_XSS",
        "High_Risk",
        79,
        "The application embeds untrusted input in the generated output without encoding it.",
    ),
    (
        "Stored_XSS",
        "High_Risk",
        79,
        "The application stores untrusted input and later embeds it in a page without encoding it.",
    ),
    (
        "Command_Injection",
        "Critical_Risk",
        78,
        "The application runs a system command built from untrusted input.",
    ),
    (
        "Path_Traversal",
        "Medium_Threat",
        22,
        "The application uses untrusted input to build a file path without validating it.",
    ),
    (
        "Insufficiently_Protected_Credentials",
        "Low_Visibility",
        522,
        "The application stores or transmits credentials without adequate protection.",
    ),
    (
        "Hardcoded_password_in_Connection_String",
        "Medium_Threat",
        259,
        "A password is hard-coded in a connection string.",
    ),
    (
        "Deserialization_of_Untrusted_Data",
        "High_Risk",
        502,
        "The application deserializes data from an untrusted source.",
    ),
    (
        "Open_Redirect",
        "Low_Visibility",
        601,
        "The application redirects to a URL taken from untrusted input.",
    ),
    (
        "Information_Exposure_Through_an_Error_Message",
        "Low_Visibility",
        209,
        "The application exposes internal details in an error message.",
    ),
    (
        "Use_Of_Hardcoded_Password",
        "Medium_Threat",
        259,
        "The application contains a hard-coded password.",
    ),
    (
        "Missing_HSTS_Header",
        "Low_Visibility",
        346,
        "The application does not set the Strict-Transport-Security header.",
    ),
];

/// (languageName, file extension, source root)
pub const LANGUAGES: &[(&str, &str, &str)] = &[
    ("Java", "java", "/src/main/java/com/acme"),
    ("Python", "py", "/app"),
    ("JavaScript", "js", "/web/src"),
    ("CSharp", "cs", "/src/Acme"),
    ("Go", "go", "/internal"),
];

pub const COMPLIANCES: &[&str] = &[
    "OWASP Top 10 2021",
    "PCI DSS v4.0",
    "CWE top 25",
    "NIST SP 800-53",
    "ASD STIG 5.3",
    "OWASP ASVS",
    "SANS top 25",
];

pub const NODE_NAMES: &[&str] = &[
    "getParameter",
    "query",
    "executeQuery",
    "user",
    "data",
    "loads",
    "write",
    "redirect",
];
pub const DOM_TYPES: &[&str] = &[
    "MethodInvokeExpr",
    "Declarator",
    "UnknownReference",
    "Param",
];

/// (queryName, group, platform, issueType, expectedValue, value)
pub const KICS_QUERIES: &[(&str, &str, &str, &str, &str, &str)] = &[
    (
        "Missing User Instruction",
        "Build Process [Taken from category]",
        "Dockerfile",
        "MissingAttribute",
        "The 'Dockerfile' should contain the 'USER' instruction",
        "The 'Dockerfile' does not contain any 'USER' instruction",
    ),
    (
        "Healthcheck Instruction Missing",
        "Insecure Configurations [Taken from category]",
        "Dockerfile",
        "MissingAttribute",
        "Dockerfile should contain instruction 'HEALTHCHECK'",
        "Dockerfile doesn't contain instruction 'HEALTHCHECK'",
    ),
    (
        "Unpinned Actions Full Length Commit SHA",
        "Supply-Chain [Taken from category]",
        "CICD",
        "IncorrectValue",
        "Action pinned to a full length commit SHA",
        "Action is not pinned to a full length commit SHA",
    ),
    (
        "S3 Bucket Without Server-side-encryption",
        "Encryption [Taken from category]",
        "Terraform",
        "MissingAttribute",
        "'server_side_encryption_configuration' should be defined",
        "'server_side_encryption_configuration' is undefined",
    ),
];

/// (ecosystem prefix, package name, vulnerable version, recommended version)
pub const PACKAGES: &[(&str, &str, &str, &str)] = &[
    ("Npm", "jquery", "2.1.4", "3.5.0"),
    ("Npm", "on-headers", "1.0.2", "1.1.0"),
    (
        "Maven",
        "org.apache.logging.log4j:log4j-core",
        "2.14.1",
        "2.17.1",
    ),
    ("Python", "requests", "2.19.0", "2.31.0"),
    ("Npm", "lodash", "4.17.15", "4.17.21"),
    (
        "Maven",
        "com.fasterxml.jackson.core:jackson-databind",
        "2.9.8",
        "2.12.7",
    ),
];

/// (packageName, packageVersion, imageName, imageTag)
pub const CONTAINER_PACKAGES: &[(&str, &str, &str, &str)] = &[
    ("binutils", "2.32-r0", "acme/api-gateway", "1.13"),
    ("openssl", "1.1.1k-r0", "acme/payments", "3.2"),
    ("zlib", "1.2.11-r3", "acme/web", "2024.10"),
    ("busybox", "1.31.1-r9", "acme/worker", "7"),
];

pub const SCA_CWES: &[&str] = &[
    "CWE-674",
    "CWE-79",
    "CWE-400",
    "NVD-CWE-Other",
    "CWE-241",
    "CWE-502",
];

/// (alert name, CWE, OWASP category, solution)
pub const DAST_ALERTS: &[(&str, &str, &str, &str)] = &[
    (
        "Cross Site Scripting (Reflected)",
        "79",
        "A03:2021 - Injection",
        "Validate all input and encode output for the context it is written to.",
    ),
    (
        "SQL Injection",
        "89",
        "A03:2021 - Injection",
        "Use parameterised queries; never build SQL from request data.",
    ),
    (
        "Content Security Policy (CSP) Header Not Set",
        "693",
        "A05:2021 - Security Misconfiguration",
        "Set a Content-Security-Policy header on every response.",
    ),
    (
        "Cookie Without Secure Flag",
        "614",
        "A05:2021 - Security Misconfiguration",
        "Set the Secure flag on every cookie carrying session data.",
    ),
    (
        "Missing Anti-clickjacking Header",
        "1021",
        "A05:2021 - Security Misconfiguration",
        "Send X-Frame-Options or a CSP frame-ancestors directive.",
    ),
    (
        "Server Leaks Version Information",
        "-1",
        "A06:2021 - Vulnerable and Outdated Components",
        "Suppress the Server header or remove its version.",
    ),
    (
        "Path Traversal",
        "22",
        "A01:2021 - Broken Access Control",
        "Resolve paths against an allow list and reject '..' segments.",
    ),
];

pub const DAST_PATHS: &[&str] = &[
    "/login",
    "/search",
    "/api/v1/orders",
    "/account/settings",
    "/static/app.js",
    "/",
];
pub const HTTP_METHODS: &[&str] = &["GET", "POST", "GET", "PUT"];

pub const ORGS: &[&str] = &[
    "acme-payments",
    "acme-web",
    "acme-mobile",
    "acme-platform",
    "acme-data",
];
pub const SERVICES: &[&str] = &[
    "checkout",
    "ledger",
    "storefront",
    "gateway",
    "identity",
    "reports",
    "search",
    "billing",
];
pub const TEAMS: &[&str] = &["payments", "web", "mobile", "platform", "data"];
pub const FEATURE_BRANCHES: &[&str] = &[
    "develop",
    "release/2.4",
    "feature/new-checkout",
    "hotfix/cve-patch",
];
