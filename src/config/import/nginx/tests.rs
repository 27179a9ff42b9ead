//! Translation table tests: nginx snippets and the spec and report entries they become.
