//! The `cxone-etm` command's library part: the run report renderer (Markdown and HTML), kept out
//! of the connector library, which the Lambda functions link.

pub mod report;
