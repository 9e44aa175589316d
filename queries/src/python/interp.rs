//! The tree-walking evaluator for the Python subset that dataset definitions use.
//!
//! Why a tree walker over ruff's AST: definitions are small programs run once; what matters
//! is exact Python behaviour on the constructs they use and a clear error, with
//! `file:line:column`, for everything else.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use ruff_python_ast::{self as ast, Expr, Stmt};
use ruff_text_size::{Ranged, TextSize};

use super::value::{Dict, Module, V, float_repr};
use crate::qm::Graph;

/// A Python exception (or a construct quarry does not support, raised as one).
#[derive(Debug, Clone)]
pub struct PyErr {
    /// The exception class, e.g. `TypeError`, `ehrql.Error`.
    pub kind: String,
    pub message: String,
    /// Where it was raised: `(file index, offset)`.
    pub loc: Option<(usize, TextSize)>,
    /// The `args` of a user `raise`, for `except ... as e`.
    pub value: Option<V>,
}

impl std::fmt::Debug for V {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{}>", self.type_name())
    }
}

pub fn err(kind: &str, message: impl Into<String>) -> Flow {
    Flow::Err(PyErr { kind: kind.into(), message: message.into(), loc: None, value: None })
}

pub fn type_err(message: impl Into<String>) -> Flow {
    err("TypeError", message)
}

pub fn value_err(message: impl Into<String>) -> Flow {
    err("ValueError", message)
}

/// Non-local control flow.
#[derive(Debug)]
pub enum Flow {
    Err(PyErr),
    Return(V),
    Break,
    Continue,
}

impl Flow {
    /// Records where an error happened, if it has no location yet.
    pub fn at(mut self, file: usize, offset: TextSize) -> Flow {
        if let Flow::Err(e) = &mut self
            && e.loc.is_none()
        {
            e.loc = Some((file, offset));
        }
        self
    }
}

pub type R<T> = Result<T, Flow>;

/// A loaded source file.
pub struct SourceFile {
    pub path: PathBuf,
    /// As shown in messages (relative to the working directory when possible).
    pub shown: String,
    pub text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    pub fn new(path: PathBuf, shown: String, text: String) -> SourceFile {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        SourceFile { path, shown, text, line_starts }
    }

    /// 1-based line and column of a byte offset.
    pub fn line_col(&self, offset: TextSize) -> (usize, usize) {
        let o = usize::from(offset);
        let line = self.line_starts.partition_point(|&s| s <= o) - 1;
        let col = self.text[self.line_starts[line]..o.min(self.text.len())].chars().count() + 1;
        (line + 1, col)
    }

    pub fn line(&self, line: usize) -> &str {
        let start = self.line_starts[line - 1];
        let end = self.line_starts.get(line).copied().unwrap_or(self.text.len());
        self.text[start..end].trim_end_matches(['\n', '\r'])
    }
}

/// A scope: module globals, a function's locals, or a comprehension's.
pub struct Scope {
    pub vars: RefCell<HashMap<String, V>>,
    pub parent: Option<Rc<Scope>>,
    pub globals_declared: RefCell<HashSet<String>>,
}

impl Scope {
    pub fn new(parent: Option<Rc<Scope>>) -> Rc<Scope> {
        Rc::new(Scope { vars: RefCell::new(HashMap::new()), parent, globals_declared: RefCell::new(HashSet::new()) })
    }

    fn lookup(&self, name: &str) -> Option<V> {
        if let Some(v) = self.vars.borrow().get(name) {
            return Some(v.clone());
        }
        self.parent.as_ref().and_then(|p| p.lookup(name))
    }

    fn root(self: &Rc<Scope>) -> Rc<Scope> {
        let mut s = self.clone();
        while let Some(p) = s.parent.clone() {
            s = p;
        }
        s
    }

    fn set(self: &Rc<Scope>, name: &str, value: V) {
        if self.globals_declared.borrow().contains(name) {
            self.root().vars.borrow_mut().insert(name.to_string(), value);
        } else {
            self.vars.borrow_mut().insert(name.to_string(), value);
        }
    }
}

#[derive(Clone)]
pub enum Body {
    Stmts(Rc<Vec<Stmt>>),
    Lambda(Rc<Expr>),
}

#[derive(Clone)]
pub struct Param {
    pub name: String,
    pub default: Option<V>,
}

/// A user function or lambda with its closure.
pub struct FunctionDef {
    pub name: String,
    pub positional: Vec<Param>,
    pub varargs: Option<String>,
    pub kwonly: Vec<Param>,
    pub varkw: Option<String>,
    pub body: Body,
    pub closure: Rc<Scope>,
    pub file: usize,
}

/// Call arguments after evaluation.
#[derive(Default)]
pub struct Args {
    pub pos: Vec<V>,
    pub kw: Vec<(String, V)>,
}

impl Args {
    pub fn new(pos: Vec<V>) -> Args {
        Args { pos, kw: vec![] }
    }

    /// Takes a keyword argument.
    pub fn take_kw(&mut self, name: &str) -> Option<V> {
        let i = self.kw.iter().position(|(n, _)| n == name)?;
        Some(self.kw.remove(i).1)
    }

    /// Binds positional-or-keyword parameters by name (`None`: not given), then checks that
    /// nothing is left over.
    pub fn bind(mut self, func: &str, names: &[&str]) -> R<Vec<Option<V>>> {
        if self.pos.len() > names.len() {
            return Err(type_err(format!("{func}() takes {} positional arguments but {} were given", names.len(), self.pos.len())));
        }
        let mut out: Vec<Option<V>> = names.iter().map(|_| None).collect();
        for (i, v) in std::mem::take(&mut self.pos).into_iter().enumerate() {
            out[i] = Some(v);
        }
        for (k, v) in std::mem::take(&mut self.kw) {
            let Some(i) = names.iter().position(|n| *n == k) else {
                return Err(type_err(format!("{func}() got an unexpected keyword argument '{k}'")));
            };
            if out[i].is_some() {
                return Err(type_err(format!("{func}() got multiple values for argument '{k}'")));
            }
            out[i] = Some(v);
        }
        Ok(out)
    }
}

/// What a definition file leaves behind.
pub struct Interp {
    pub files: Vec<SourceFile>,
    pub graph: Graph,
    pub modules: HashMap<String, V>,
    /// The definition's directory: sibling modules and relative paths resolve here.
    pub base_dir: PathBuf,
    /// `sys.argv`: the definition's path, then the user's arguments.
    pub argv: Vec<String>,
    pub claimed_permissions: Vec<String>,
    /// Where `print()` goes (stderr by default; tests capture it).
    pub out: Box<dyn std::io::Write>,
    pub current_file: usize,
    loading: Vec<String>,
}

impl Interp {
    pub fn new(base_dir: PathBuf, argv: Vec<String>) -> Interp {
        Interp {
            files: vec![],
            graph: Graph::new(),
            modules: HashMap::new(),
            base_dir,
            argv,
            claimed_permissions: vec![],
            out: Box::new(std::io::stderr()),
            current_file: 0,
            loading: vec![],
        }
    }

    /// A data file a definition names (codelists, `table_from_file`): relative to the
    /// directory quarry runs in, as ehrQL resolves them (the workspace root in a project).
    pub fn data_path(&self, file: &str) -> PathBuf {
        PathBuf::from(file)
    }

    /// Runs a file as a module and returns its globals.
    pub fn run_file(&mut self, path: &Path, shown: &str, module_name: &str) -> R<Rc<Scope>> {
        let text = std::fs::read_to_string(path).map_err(|e| err("FileNotFoundError", format!("cannot read {shown}: {e}")))?;
        let file = self.files.len();
        self.files.push(SourceFile::new(path.to_path_buf(), shown.to_string(), text));
        let parsed = match ruff_python_parser::parse_module(&self.files[file].text) {
            Ok(p) => p,
            Err(e) => {
                return Err(Flow::Err(PyErr {
                    kind: "SyntaxError".into(),
                    message: e.error.to_string(),
                    loc: Some((file, e.location.start())),
                    value: None,
                }));
            }
        };
        let module = parsed.into_syntax();
        let scope = Scope::new(None);
        scope.vars.borrow_mut().insert("__name__".into(), V::str(module_name));
        scope.vars.borrow_mut().insert("__file__".into(), V::str(&path.to_string_lossy()));
        let previous = self.current_file;
        self.current_file = file;
        let result = self.exec_block(&module.body, &scope);
        self.current_file = previous;
        match result {
            Ok(()) => Ok(scope),
            Err(Flow::Err(e)) => Err(Flow::Err(e)),
            Err(Flow::Return(_)) => Err(err("SyntaxError", "'return' outside function")),
            Err(Flow::Break | Flow::Continue) => Err(err("SyntaxError", "'break' or 'continue' outside loop")),
        }
    }

    fn unsupported(&self, what: &str) -> Flow {
        err(
            "quarry.UnsupportedError",
            format!(
                "{what} is not supported by quarry's Python interpreter; rewrite this part of the definition, or report it if real definitions need it"
            ),
        )
    }

    // --- Statements ------------------------------------------------------------------

    pub fn exec_block(&mut self, body: &[Stmt], scope: &Rc<Scope>) -> R<()> {
        for stmt in body {
            let file = self.current_file;
            self.exec(stmt, scope).map_err(|e| e.at(file, stmt.range().start()))?;
        }
        Ok(())
    }

    fn exec(&mut self, stmt: &Stmt, scope: &Rc<Scope>) -> R<()> {
        match stmt {
            Stmt::Expr(s) => {
                self.eval(&s.value, scope)?;
            }
            Stmt::Assign(s) => {
                let value = self.eval(&s.value, scope)?;
                for target in &s.targets {
                    self.assign(target, value.clone(), scope)?;
                }
            }
            Stmt::AnnAssign(s) => {
                if let Some(v) = &s.value {
                    let value = self.eval(v, scope)?;
                    self.assign(&s.target, value, scope)?;
                }
            }
            Stmt::AugAssign(s) => {
                let current = self.eval(&s.target, scope)?;
                let rhs = self.eval(&s.value, scope)?;
                let value = self.binop(s.op, current, rhs)?;
                self.assign(&s.target, value, scope)?;
            }
            Stmt::If(s) => {
                let test = self.eval(&s.test, scope)?;
                if self.truthy(&test)? {
                    return self.exec_block(&s.body, scope);
                }
                for clause in &s.elif_else_clauses {
                    let take = match &clause.test {
                        Some(t) => {
                            let v = self.eval(t, scope)?;
                            self.truthy(&v)?
                        }
                        None => true,
                    };
                    if take {
                        return self.exec_block(&clause.body, scope);
                    }
                }
            }
            Stmt::For(s) => {
                let iterable = self.eval(&s.iter, scope)?;
                let items = self.iterate(&iterable)?;
                let mut broke = false;
                for item in items {
                    self.assign(&s.target, item, scope)?;
                    if self.loop_body(&s.body, scope)? {
                        broke = true;
                        break;
                    }
                }
                if !broke {
                    self.exec_block(&s.orelse, scope)?;
                }
            }
            Stmt::While(s) => {
                let mut broke = false;
                let mut guard: u64 = 0;
                loop {
                    let t = self.eval(&s.test, scope)?;
                    if !self.truthy(&t)? {
                        break;
                    }
                    guard += 1;
                    if guard > 100_000_000 {
                        return Err(err("RuntimeError", "while loop ran for 100,000,000 iterations; is it infinite?"));
                    }
                    if self.loop_body(&s.body, scope)? {
                        broke = true;
                        break;
                    }
                }
                if !broke {
                    self.exec_block(&s.orelse, scope)?;
                }
            }
            Stmt::Break(_) => return Err(Flow::Break),
            Stmt::Continue(_) => return Err(Flow::Continue),
            Stmt::Pass(_) => {}
            Stmt::Return(s) => {
                let v = match &s.value {
                    Some(e) => self.eval(e, scope)?,
                    None => V::None,
                };
                return Err(Flow::Return(v));
            }
            Stmt::FunctionDef(f) => {
                if f.is_async {
                    return Err(self.unsupported("async def"));
                }
                let mut func = self.function_def(&f.name.id, &f.parameters, scope)?;
                func.body = Body::Stmts(Rc::new(f.body.to_vec()));
                let mut value = V::Function(Rc::new(func));
                for d in f.decorator_list.iter().rev() {
                    let dec = self.eval(&d.expression, scope)?;
                    value = self.call(dec, Args::new(vec![value]))?;
                }
                scope.set(&f.name.id, value);
            }
            Stmt::ClassDef(c) => {
                let value = self.frame_class(c, scope)?;
                scope.set(&c.name.id, value);
            }
            Stmt::Import(s) => {
                for alias in &s.names {
                    let name = alias.name.id.as_str();
                    let module = self.import(name)?;
                    match &alias.asname {
                        Some(asname) => scope.set(&asname.id, module),
                        None => {
                            // `import a.b.c` binds `a`.
                            let top = name.split('.').next().unwrap_or(name);
                            let top_module = self.import(top)?;
                            scope.set(top, top_module);
                        }
                    }
                }
            }
            Stmt::ImportFrom(s) => {
                if s.level > 0 {
                    return Err(self.unsupported("a relative import"));
                }
                let module_name = s.module.as_ref().map(|m| m.id.as_str()).unwrap_or("");
                let module = self.import(module_name)?;
                for alias in &s.names {
                    let name = alias.name.id.as_str();
                    if name == "*" {
                        if let V::Module(m) = &module {
                            let attrs: Vec<(String, V)> =
                                m.attrs.borrow().iter().filter(|(k, _)| !k.starts_with('_')).map(|(k, v)| (k.clone(), v.clone())).collect();
                            for (k, v) in attrs {
                                scope.set(&k, v);
                            }
                        }
                        continue;
                    }
                    let value = match self.get_attr(&module, name) {
                        Ok(v) => v,
                        Err(_) => {
                            // A submodule: `from ehrql.tables import core`.
                            match self.import(&format!("{module_name}.{name}")) {
                                Ok(v) => v,
                                Err(_) => {
                                    return Err(err("ImportError", format!("cannot import name '{name}' from '{module_name}'")));
                                }
                            }
                        }
                    };
                    let bind = alias.asname.as_ref().map(|a| a.id.as_str()).unwrap_or(name);
                    scope.set(bind, value);
                }
            }
            Stmt::Global(g) => {
                for n in &g.names {
                    scope.globals_declared.borrow_mut().insert(n.id.to_string());
                }
            }
            Stmt::Nonlocal(_) => return Err(self.unsupported("`nonlocal`")),
            Stmt::Assert(a) => {
                let t = self.eval(&a.test, scope)?;
                if !self.truthy(&t)? {
                    let msg = match &a.msg {
                        Some(m) => {
                            let v = self.eval(m, scope)?;
                            self.to_str(&v)?
                        }
                        None => String::new(),
                    };
                    return Err(err("AssertionError", msg));
                }
            }
            Stmt::Raise(r) => {
                let Some(exc) = &r.exc else {
                    return Err(err("RuntimeError", "No active exception to reraise"));
                };
                let v = self.eval(exc, scope)?;
                return Err(match v {
                    V::Object(o) if o.get("__exception__").is_some() => {
                        let msg = o.get("args").map(|a| self.to_str(&a)).transpose()?.unwrap_or_default();
                        Flow::Err(PyErr { kind: o.class.into(), message: msg, loc: None, value: Some(V::Object(o.clone())) })
                    }
                    V::Type(t) => err(t, ""),
                    other => type_err(format!("exceptions must derive from BaseException, not {}", other.type_name())),
                });
            }
            Stmt::Try(t) => {
                let result = self.exec_block(&t.body, scope);
                let outcome = match result {
                    Err(Flow::Err(e)) => {
                        let mut handled = None;
                        for h in &t.handlers {
                            let ast::ExceptHandler::ExceptHandler(h) = h;
                            let matches = match &h.type_ {
                                None => true,
                                Some(te) => {
                                    let tv = self.eval(te, scope)?;
                                    exception_matches(&tv, &e.kind)
                                }
                            };
                            if matches {
                                if let Some(name) = &h.name {
                                    let obj = super::builtins::exception_object(&e);
                                    scope.set(&name.id, obj);
                                }
                                handled = Some(self.exec_block(&h.body, scope));
                                break;
                            }
                        }
                        match handled {
                            Some(r) => r,
                            None => Err(Flow::Err(e)),
                        }
                    }
                    Ok(()) => self.exec_block(&t.orelse, scope),
                    other => other,
                };
                if !t.finalbody.is_empty() {
                    self.exec_block(&t.finalbody, scope)?;
                }
                outcome?;
            }
            Stmt::With(_) => return Err(self.unsupported("`with`")),
            Stmt::Delete(d) => {
                for t in &d.targets {
                    match t {
                        Expr::Name(n) => {
                            scope.vars.borrow_mut().remove(n.id.as_str());
                        }
                        Expr::Subscript(s) => {
                            let obj = self.eval(&s.value, scope)?;
                            let key = self.eval(&s.slice, scope)?;
                            match obj {
                                V::Dict(d) => {
                                    let k = self.hkey(&key)?;
                                    if d.borrow_mut().remove(&k).is_none() {
                                        return Err(err("KeyError", self.repr(&key)?));
                                    }
                                }
                                V::List(l) => {
                                    let i = self.index(&key, l.borrow().len())?;
                                    l.borrow_mut().remove(i);
                                }
                                _ => return Err(self.unsupported("`del` of this target")),
                            }
                        }
                        _ => return Err(self.unsupported("`del` of this target")),
                    }
                }
            }
            Stmt::Match(_) => return Err(self.unsupported("`match`")),
            Stmt::TypeAlias(_) => return Err(self.unsupported("`type` aliases")),
            Stmt::IpyEscapeCommand(_) => return Err(self.unsupported("IPython escapes")),
        }
        Ok(())
    }

    /// Runs one iteration of a loop body; true when it `break`s.
    fn loop_body(&mut self, body: &[Stmt], scope: &Rc<Scope>) -> R<bool> {
        match self.exec_block(body, scope) {
            Ok(()) | Err(Flow::Continue) => Ok(false),
            Err(Flow::Break) => Ok(true),
            Err(e) => Err(e),
        }
    }

    fn function_def(&mut self, name: &str, p: &ast::Parameters, scope: &Rc<Scope>) -> R<FunctionDef> {
        let mut positional = vec![];
        for a in p.posonlyargs.iter().chain(p.args.iter()) {
            let default = a.default.as_ref().map(|d| self.eval(d, scope)).transpose()?;
            positional.push(Param { name: a.parameter.name.id.to_string(), default });
        }
        let mut kwonly = vec![];
        for a in p.kwonlyargs.iter() {
            let default = a.default.as_ref().map(|d| self.eval(d, scope)).transpose()?;
            kwonly.push(Param { name: a.parameter.name.id.to_string(), default });
        }
        Ok(FunctionDef {
            name: name.to_string(),
            positional,
            varargs: p.vararg.as_ref().map(|v| v.name.id.to_string()),
            kwonly,
            varkw: p.kwarg.as_ref().map(|v| v.name.id.to_string()),
            body: Body::Stmts(Rc::new(vec![])),
            closure: scope.clone(),
            file: self.current_file,
        })
    }

    pub fn assign(&mut self, target: &Expr, value: V, scope: &Rc<Scope>) -> R<()> {
        match target {
            Expr::Name(n) => {
                scope.set(n.id.as_str(), value);
                Ok(())
            }
            Expr::Tuple(t) => self.unpack(&t.elts, value, scope),
            Expr::List(t) => self.unpack(&t.elts, value, scope),
            Expr::Attribute(a) => {
                let obj = self.eval(&a.value, scope)?;
                self.set_attr(&obj, a.attr.id.as_str(), value)
            }
            Expr::Subscript(s) => {
                let obj = self.eval(&s.value, scope)?;
                let key = self.eval(&s.slice, scope)?;
                match obj {
                    V::Dict(d) => {
                        let k = self.hkey(&key)?;
                        d.borrow_mut().insert(k, key, value);
                        Ok(())
                    }
                    V::List(l) => {
                        let len = l.borrow().len();
                        let i = self.index(&key, len)?;
                        l.borrow_mut()[i] = value;
                        Ok(())
                    }
                    other => Err(type_err(format!("'{}' object does not support item assignment", other.type_name()))),
                }
            }
            Expr::Starred(_) => Err(self.unsupported("a starred assignment target on its own")),
            _ => Err(err("SyntaxError", "cannot assign to this expression")),
        }
    }

    fn unpack(&mut self, targets: &[Expr], value: V, scope: &Rc<Scope>) -> R<()> {
        let items = self.iterate(&value)?;
        let star = targets.iter().position(|t| matches!(t, Expr::Starred(_)));
        match star {
            None => {
                if items.len() != targets.len() {
                    return Err(value_err(if items.len() > targets.len() {
                        format!("too many values to unpack (expected {})", targets.len())
                    } else {
                        format!("not enough values to unpack (expected {}, got {})", targets.len(), items.len())
                    }));
                }
                for (t, v) in targets.iter().zip(items) {
                    self.assign(t, v, scope)?;
                }
            }
            Some(si) => {
                let after = targets.len() - si - 1;
                if items.len() < si + after {
                    return Err(value_err("not enough values to unpack"));
                }
                for (t, v) in targets[..si].iter().zip(items.iter()) {
                    self.assign(t, v.clone(), scope)?;
                }
                let middle = items[si..items.len() - after].to_vec();
                if let Expr::Starred(s) = &targets[si] {
                    self.assign(&s.value, V::list(middle), scope)?;
                }
                for (t, v) in targets[si + 1..].iter().zip(items[items.len() - after..].iter()) {
                    self.assign(t, v.clone(), scope)?;
                }
            }
        }
        Ok(())
    }

    // --- Expressions -----------------------------------------------------------------

    pub fn eval(&mut self, expr: &Expr, scope: &Rc<Scope>) -> R<V> {
        let file = self.current_file;
        self.eval_inner(expr, scope).map_err(|e| e.at(file, expr.range().start()))
    }

    fn eval_inner(&mut self, expr: &Expr, scope: &Rc<Scope>) -> R<V> {
        Ok(match expr {
            Expr::NumberLiteral(n) => match &n.value {
                ast::Number::Int(i) => V::Int(i.as_i64().ok_or_else(|| err("OverflowError", "integer literal too large"))?),
                ast::Number::Float(f) => V::Float(*f),
                ast::Number::Complex { .. } => return Err(self.unsupported("complex numbers")),
            },
            Expr::StringLiteral(s) => V::str(s.value.to_str()),
            Expr::BooleanLiteral(b) => V::Bool(b.value),
            Expr::NoneLiteral(_) => V::None,
            Expr::EllipsisLiteral(_) => return Err(self.unsupported("`...`")),
            Expr::BytesLiteral(_) => return Err(self.unsupported("bytes literals")),
            Expr::FString(f) => {
                let mut out = String::new();
                for part in f.value.iter() {
                    match part {
                        ast::FStringPart::Literal(l) => out.push_str(&l.value),
                        ast::FStringPart::FString(fs) => self.fstring_elements(&fs.elements, scope, &mut out)?,
                    }
                }
                V::str(&out)
            }
            Expr::TString(_) => return Err(self.unsupported("t-strings")),
            Expr::Name(n) => self.lookup(n.id.as_str(), scope)?,
            Expr::List(l) => V::list(self.eval_elements(&l.elts, scope)?),
            Expr::Tuple(t) => V::tuple(self.eval_elements(&t.elts, scope)?),
            Expr::Set(s) => {
                let items = self.eval_elements(&s.elts, scope)?;
                self.make_set(items)?
            }
            Expr::Dict(d) => {
                let mut dict = Dict::default();
                for item in &d.items {
                    match &item.key {
                        Some(k) => {
                            let key = self.eval(k, scope)?;
                            let value = self.eval(&item.value, scope)?;
                            let hk = self.hkey(&key)?;
                            dict.insert(hk, key, value);
                        }
                        None => {
                            let other = self.eval(&item.value, scope)?;
                            let V::Dict(o) = other else {
                                return Err(type_err("'**' argument must be a mapping"));
                            };
                            for (k, v) in o.borrow().iter() {
                                let hk = self.hkey(k)?;
                                dict.insert(hk, k.clone(), v.clone());
                            }
                        }
                    }
                }
                V::Dict(Rc::new(RefCell::new(dict)))
            }
            Expr::Attribute(a) => {
                let obj = self.eval(&a.value, scope)?;
                self.get_attr(&obj, a.attr.id.as_str())?
            }
            Expr::Subscript(s) => {
                let obj = self.eval(&s.value, scope)?;
                if let Expr::Slice(sl) = &*s.slice {
                    let lower = sl.lower.as_ref().map(|e| self.eval(e, scope)).transpose()?;
                    let upper = sl.upper.as_ref().map(|e| self.eval(e, scope)).transpose()?;
                    let step = sl.step.as_ref().map(|e| self.eval(e, scope)).transpose()?;
                    return self.slice(&obj, lower, upper, step);
                }
                let key = self.eval(&s.slice, scope)?;
                self.subscript(&obj, &key)?
            }
            Expr::Call(c) => {
                let func = self.eval(&c.func, scope)?;
                let mut args = Args::default();
                for a in c.arguments.args.iter() {
                    if let Expr::Starred(s) = a {
                        let v = self.eval(&s.value, scope)?;
                        args.pos.extend(self.iterate(&v)?);
                    } else {
                        args.pos.push(self.eval(a, scope)?);
                    }
                }
                for k in c.arguments.keywords.iter() {
                    let v = self.eval(&k.value, scope)?;
                    match &k.arg {
                        Some(name) => args.kw.push((name.id.to_string(), v)),
                        None => {
                            let V::Dict(d) = v else {
                                return Err(type_err("argument after ** must be a mapping"));
                            };
                            for (k, v) in d.borrow().iter() {
                                let V::Str(k) = k else {
                                    return Err(type_err("keywords must be strings"));
                                };
                                args.kw.push((k.to_string(), v.clone()));
                            }
                        }
                    }
                }
                self.call(func, args)?
            }
            Expr::BinOp(b) => {
                let l = self.eval(&b.left, scope)?;
                let r = self.eval(&b.right, scope)?;
                self.binop(b.op, l, r)?
            }
            Expr::UnaryOp(u) => {
                let v = self.eval(&u.operand, scope)?;
                match u.op {
                    ast::UnaryOp::Not => V::Bool(!self.truthy(&v)?),
                    ast::UnaryOp::USub => match v {
                        V::Int(i) => V::Int(-i),
                        V::Float(f) => V::Float(-f),
                        V::Bool(b) => V::Int(-(b as i64)),
                        V::TimeDelta(d) => V::TimeDelta(-d),
                        other => super::api::negate(self, other)?,
                    },
                    ast::UnaryOp::UAdd => match v {
                        V::Int(_) | V::Float(_) => v,
                        V::Bool(b) => V::Int(b as i64),
                        other => return Err(type_err(format!("bad operand type for unary +: '{}'", other.type_name()))),
                    },
                    ast::UnaryOp::Invert => match v {
                        V::Int(i) => V::Int(!i),
                        V::Bool(b) => V::Int(!(b as i64)),
                        other => super::api::invert(self, other)?,
                    },
                }
            }
            Expr::BoolOp(b) => {
                let mut last = V::None;
                for (i, e) in b.values.iter().enumerate() {
                    last = self.eval(e, scope)?;
                    if i + 1 == b.values.len() {
                        break;
                    }
                    let t = self.truthy(&last)?;
                    match b.op {
                        ast::BoolOp::And if !t => return Ok(last),
                        ast::BoolOp::Or if t => return Ok(last),
                        _ => {}
                    }
                }
                last
            }
            Expr::Compare(c) => {
                let mut left = self.eval(&c.left, scope)?;
                let mut result = V::Bool(true);
                for (i, (op, right_e)) in c.ops.iter().zip(c.comparators.iter()).enumerate() {
                    let right = self.eval(right_e, scope)?;
                    result = self.compare(*op, &left, &right)?;
                    if i + 1 < c.ops.len() && !self.truthy(&result)? {
                        return Ok(result);
                    }
                    left = right;
                }
                result
            }
            Expr::If(i) => {
                let t = self.eval(&i.test, scope)?;
                if self.truthy(&t)? { self.eval(&i.body, scope)? } else { self.eval(&i.orelse, scope)? }
            }
            Expr::Lambda(l) => {
                let empty = ast::Parameters::default();
                let params = l.parameters.as_deref().unwrap_or(&empty);
                let mut f = self.function_def("<lambda>", params, scope)?;
                f.body = Body::Lambda(Rc::new((*l.body).clone()));
                V::Function(Rc::new(f))
            }
            Expr::ListComp(c) => V::list(self.collect_comprehension(&c.elt, &c.generators, scope)?),
            // Generators are evaluated eagerly: definitions only consume them whole.
            Expr::Generator(c) => V::list(self.collect_comprehension(&c.elt, &c.generators, scope)?),
            Expr::SetComp(c) => {
                let items = self.collect_comprehension(&c.elt, &c.generators, scope)?;
                self.make_set(items)?
            }
            Expr::DictComp(c) => {
                let mut dict = Dict::default();
                let inner = Scope::new(Some(scope.clone()));
                let Some(key_e) = &c.key else {
                    return Err(self.unsupported("`**` in a dict comprehension"));
                };
                self.comprehension(&c.generators, 0, &inner, &mut |this, s| {
                    let k = this.eval(key_e, s)?;
                    let v = this.eval(&c.value, s)?;
                    let hk = this.hkey(&k)?;
                    dict.insert(hk, k, v);
                    Ok(())
                })?;
                V::Dict(Rc::new(RefCell::new(dict)))
            }
            Expr::Named(n) => {
                let v = self.eval(&n.value, scope)?;
                self.assign(&n.target, v.clone(), scope)?;
                v
            }
            Expr::Starred(_) => return Err(err("SyntaxError", "can't use starred expression here")),
            Expr::Slice(_) => return Err(err("SyntaxError", "slice outside a subscript")),
            Expr::Await(_) | Expr::Yield(_) | Expr::YieldFrom(_) => {
                return Err(self.unsupported("generators and async code"));
            }
            Expr::IpyEscapeCommand(_) => return Err(self.unsupported("IPython escapes")),
        })
    }

    fn eval_elements(&mut self, elts: &[Expr], scope: &Rc<Scope>) -> R<Vec<V>> {
        let mut out = Vec::with_capacity(elts.len());
        for e in elts {
            if let Expr::Starred(s) = e {
                let v = self.eval(&s.value, scope)?;
                out.extend(self.iterate(&v)?);
            } else {
                out.push(self.eval(e, scope)?);
            }
        }
        Ok(out)
    }

    fn collect_comprehension(&mut self, elt: &Expr, gens: &[ast::Comprehension], scope: &Rc<Scope>) -> R<Vec<V>> {
        let mut out = vec![];
        let inner = Scope::new(Some(scope.clone()));
        self.comprehension(gens, 0, &inner, &mut |this, s| {
            out.push(this.eval(elt, s)?);
            Ok(())
        })?;
        Ok(out)
    }

    fn comprehension(
        &mut self,
        gens: &[ast::Comprehension],
        i: usize,
        scope: &Rc<Scope>,
        body: &mut dyn FnMut(&mut Interp, &Rc<Scope>) -> R<()>,
    ) -> R<()> {
        let Some(g) = gens.get(i) else {
            return body(self, scope);
        };
        let iterable = self.eval(&g.iter, scope)?;
        'items: for item in self.iterate(&iterable)? {
            self.assign(&g.target, item, scope)?;
            for cond in &g.ifs {
                let c = self.eval(cond, scope)?;
                if !self.truthy(&c)? {
                    continue 'items;
                }
            }
            self.comprehension(gens, i + 1, scope, body)?;
        }
        Ok(())
    }

    fn fstring_elements(&mut self, elements: &ast::InterpolatedStringElements, scope: &Rc<Scope>, out: &mut String) -> R<()> {
        for el in elements.iter() {
            match el {
                ast::InterpolatedStringElement::Literal(l) => out.push_str(&l.value),
                ast::InterpolatedStringElement::Interpolation(i) => {
                    let v = self.eval(&i.expression, scope)?;
                    if let Some(debug) = &i.debug_text {
                        out.push_str(debug.leading());
                        out.push_str(&self.files[self.current_file].text[i.expression.range()].to_string());
                        out.push_str(debug.trailing());
                    }
                    let v = match i.conversion {
                        ast::ConversionFlag::Repr => V::str(&self.repr(&v)?),
                        ast::ConversionFlag::Str => V::str(&self.to_str(&v)?),
                        _ => v,
                    };
                    let mut spec = String::new();
                    if let Some(fs) = &i.format_spec {
                        self.fstring_elements(&fs.elements, scope, &mut spec)?;
                    }
                    out.push_str(&self.format_value(&v, &spec)?);
                }
            }
        }
        Ok(())
    }

    pub fn lookup(&mut self, name: &str, scope: &Rc<Scope>) -> R<V> {
        if let Some(v) = scope.lookup(name) {
            return Ok(v);
        }
        super::builtins::builtin(name).ok_or_else(|| err("NameError", format!("name '{name}' is not defined")))
    }

    pub fn make_set(&mut self, items: Vec<V>) -> R<V> {
        let mut d = Dict::default();
        for v in items {
            let k = self.hkey(&v)?;
            d.insert(k, v, V::None);
        }
        Ok(V::Set(Rc::new(RefCell::new(d))))
    }

    pub fn hkey(&self, v: &V) -> R<super::value::HKey> {
        v.hkey().ok_or_else(|| match v {
            V::Series(_) | V::Frame(_) => type_err("unhashable type: ehrQL series and frames cannot be used as dict keys or set members"),
            other => type_err(format!("unhashable type: '{}'", other.type_name())),
        })
    }

    // --- Calls -----------------------------------------------------------------------

    /// A class definition: only ehrQL's frame classes (`class x(PatientFrame): col = Series(int)`)
    /// under a decorator that turns them into a table (`@table_from_file(path)`).
    fn frame_class(&mut self, c: &ruff_python_ast::StmtClassDef, scope: &Rc<Scope>) -> R<V> {
        let unsupported = |this: &Self| {
            this.unsupported(&format!("a class definition (`class {}`) other than a PatientFrame under @table_from_file(...)", c.name.id))
        };
        let bases: Vec<V> = match &c.arguments {
            Some(a) => a.args.iter().map(|b| self.eval(b, scope)).collect::<R<_>>()?,
            None => vec![],
        };
        let base = match bases.as_slice() {
            [V::Type(t @ ("PatientFrame" | "EventFrame"))] => *t,
            _ => return Err(unsupported(self)),
        };
        if c.decorator_list.is_empty() {
            return Err(unsupported(self));
        }
        let mut columns = vec![];
        for stmt in c.body.iter() {
            match stmt {
                Stmt::Expr(e) if matches!(*e.value, ruff_python_ast::Expr::StringLiteral(_)) => {}
                Stmt::Assign(a) if a.targets.len() == 1 => {
                    let ruff_python_ast::Expr::Name(target) = &a.targets[0] else { return Err(unsupported(self)) };
                    let spec = self.eval(&a.value, scope)?;
                    let V::Object(o) = &spec else {
                        return Err(type_err(format!("{}.{}: a column is Series(type)", c.name.id, target.id)));
                    };
                    let Some(t) = o.get("type").filter(|_| o.class == "SeriesSpec") else {
                        return Err(type_err(format!("{}.{}: a column is Series(type)", c.name.id, target.id)));
                    };
                    columns.push(V::Tuple(Rc::new(vec![V::str(&target.id), t])));
                }
                _ => return Err(unsupported(self)),
            }
        }
        let mut value = V::Object(Rc::new(super::value::Object {
            class: "FrameClass",
            attrs: std::cell::RefCell::new(vec![
                ("__name__".into(), V::str(&c.name.id)),
                ("__base__".into(), V::Type(base)),
                ("__columns__".into(), V::list(columns)),
            ]),
        }));
        for d in c.decorator_list.iter().rev() {
            let dec = self.eval(&d.expression, scope)?;
            value = self.call(dec, Args::new(vec![value]))?;
        }
        Ok(value)
    }

    pub fn call(&mut self, func: V, args: Args) -> R<V> {
        match func {
            V::Function(f) => self.call_function(&f, args),
            V::Builtin(name) => super::builtins::call_builtin(self, name, args),
            V::Method(recv, name) => self.call_method((*recv).clone(), &name, args),
            V::Type(t) => super::builtins::call_type(self, t, args),
            other => Err(type_err(format!("'{}' object is not callable", other.type_name()))),
        }
    }

    fn call_function(&mut self, f: &Rc<FunctionDef>, mut args: Args) -> R<V> {
        let scope = Scope::new(Some(f.closure.clone()));
        let n = f.positional.len();
        let extra = if args.pos.len() > n { args.pos.split_off(n) } else { vec![] };
        if !extra.is_empty() && f.varargs.is_none() {
            return Err(type_err(format!("{}() takes {} positional arguments but {} were given", f.name, n, n + extra.len())));
        }
        let given = args.pos.len();
        for (i, v) in args.pos.into_iter().enumerate() {
            scope.vars.borrow_mut().insert(f.positional[i].name.clone(), v);
        }
        let mut varkw = Dict::default();
        for (k, v) in args.kw {
            let known = f.positional.iter().position(|p| p.name == k);
            if let Some(i) = known {
                if i < given {
                    return Err(type_err(format!("{}() got multiple values for argument '{k}'", f.name)));
                }
                scope.vars.borrow_mut().insert(k, v);
            } else if f.kwonly.iter().any(|p| p.name == k) {
                scope.vars.borrow_mut().insert(k, v);
            } else if f.varkw.is_some() {
                varkw.insert(super::value::HKey::Str(Rc::from(k.as_str())), V::str(&k), v);
            } else {
                return Err(type_err(format!("{}() got an unexpected keyword argument '{k}'", f.name)));
            }
        }
        for p in f.positional.iter().chain(f.kwonly.iter()) {
            if !scope.vars.borrow().contains_key(&p.name) {
                match &p.default {
                    Some(d) => {
                        scope.vars.borrow_mut().insert(p.name.clone(), d.clone());
                    }
                    None => {
                        return Err(type_err(format!("{}() missing required argument: '{}'", f.name, p.name)));
                    }
                }
            }
        }
        if let Some(va) = &f.varargs {
            scope.vars.borrow_mut().insert(va.clone(), V::tuple(extra));
        }
        if let Some(vk) = &f.varkw {
            scope.vars.borrow_mut().insert(vk.clone(), V::Dict(Rc::new(RefCell::new(varkw))));
        }
        let previous = self.current_file;
        self.current_file = f.file;
        let result = match &f.body {
            Body::Lambda(e) => self.eval(e, &scope),
            Body::Stmts(body) => match self.exec_block(body, &scope) {
                Ok(()) => Ok(V::None),
                Err(Flow::Return(v)) => Ok(v),
                Err(e) => Err(e),
            },
        };
        self.current_file = previous;
        result
    }

    /// `obj.name(args)`.
    pub fn call_method(&mut self, obj: V, name: &str, args: Args) -> R<V> {
        super::builtins::call_method(self, obj, name, args)
    }

    pub fn get_attr(&mut self, obj: &V, name: &str) -> R<V> {
        super::builtins::get_attr(self, obj, name)
    }

    pub fn set_attr(&mut self, obj: &V, name: &str, value: V) -> R<()> {
        match obj {
            V::Dataset(_) | V::Measures(_) => super::api::set_attr(self, obj, name, value),
            V::Object(o) => {
                let mut attrs = o.attrs.borrow_mut();
                match attrs.iter_mut().find(|(n, _)| n == name) {
                    Some(slot) => slot.1 = value,
                    None => attrs.push((name.to_string(), value)),
                }
                Ok(())
            }
            V::Module(m) => {
                m.attrs.borrow_mut().insert(name.to_string(), value);
                Ok(())
            }
            other => Err(err("AttributeError", format!("'{}' object has no attribute '{name}' that can be set", other.type_name()))),
        }
    }

    // --- Imports ---------------------------------------------------------------------

    pub fn import(&mut self, name: &str) -> R<V> {
        if let Some(m) = self.modules.get(name) {
            return Ok(m.clone());
        }
        if let Some(m) = super::builtins::builtin_module(self, name)? {
            self.modules.insert(name.to_string(), m.clone());
            return Ok(m);
        }
        // A module beside the definition.
        let rel: PathBuf = name.split('.').collect();
        let candidates = [self.base_dir.join(rel.with_extension("py")), self.base_dir.join(&rel).join("__init__.py")];
        let Some(path) = candidates.into_iter().find(|p| p.is_file()) else {
            return Err(err(
                "ModuleNotFoundError",
                format!(
                    "No module named '{name}' (quarry provides ehrql, datetime, functools, operator, sys, argparse, math, itertools and collections; other modules must be .py files beside the definition)"
                ),
            ));
        };
        if self.loading.iter().any(|l| l == name) {
            return Err(err("ImportError", format!("circular import of '{name}'")));
        }
        self.loading.push(name.to_string());
        let shown = path.strip_prefix(&self.base_dir).map(|p| p.display().to_string()).unwrap_or_else(|_| path.display().to_string());
        let result = self.run_file(&path, &shown, name);
        self.loading.pop();
        let scope = result?;
        let module = Module { name: name.to_string(), attrs: RefCell::new(scope.vars.borrow().clone()) };
        let v = V::Module(Rc::new(module));
        self.modules.insert(name.to_string(), v.clone());
        Ok(v)
    }

    // --- Operators -------------------------------------------------------------------

    pub fn truthy(&self, v: &V) -> R<bool> {
        Ok(match v {
            V::None => false,
            V::Bool(b) => *b,
            V::Int(i) => *i != 0,
            V::Float(f) => *f != 0.0,
            V::Str(s) => !s.is_empty(),
            V::List(l) => !l.borrow().is_empty(),
            V::Tuple(t) => !t.is_empty(),
            V::Dict(d) | V::Set(d) => d.borrow().len > 0,
            V::TimeDelta(d) => *d != 0,
            V::Series(_) | V::Frame(_) | V::When(_) | V::WhenThen(..) | V::CaseOtherwise(_) | V::DateDifference(..) => {
                return Err(type_err(
                    "The keywords 'and', 'or', and 'not' cannot be used with ehrQL, please use the operators '&', '|' and '~' instead.\n(You will also see this error if you try use a chained comparison, such as 'a < b < c'.)",
                ));
            }
            _ => true,
        })
    }

    pub fn binop(&mut self, op: ast::Operator, l: V, r: V) -> R<V> {
        use ast::Operator as O;
        if is_ehrql(&l) || is_ehrql(&r) {
            return super::api::binop(self, op, l, r);
        }
        let num = |v: &V| match v {
            V::Int(i) => Some(*i as f64),
            V::Bool(b) => Some(*b as i64 as f64),
            V::Float(f) => Some(*f),
            _ => None,
        };
        let int = |v: &V| match v {
            V::Int(i) => Some(*i),
            V::Bool(b) => Some(*b as i64),
            _ => None,
        };
        let overflow = || err("OverflowError", "integer arithmetic overflowed 64 bits");
        if let (Some(a), Some(b)) = (int(&l), int(&r)) {
            return Ok(match op {
                O::Add => V::Int(a.checked_add(b).ok_or_else(overflow)?),
                O::Sub => V::Int(a.checked_sub(b).ok_or_else(overflow)?),
                O::Mult => V::Int(a.checked_mul(b).ok_or_else(overflow)?),
                O::Div => {
                    if b == 0 {
                        return Err(err("ZeroDivisionError", "division by zero"));
                    }
                    V::Float(a as f64 / b as f64)
                }
                O::FloorDiv => {
                    if b == 0 {
                        return Err(err("ZeroDivisionError", "integer division or modulo by zero"));
                    }
                    V::Int(a.div_euclid(b) - if b < 0 && a.rem_euclid(b) != 0 { 1 } else { 0 })
                }
                O::Mod => {
                    if b == 0 {
                        return Err(err("ZeroDivisionError", "integer division or modulo by zero"));
                    }
                    let m = a % b;
                    V::Int(if m != 0 && ((m < 0) != (b < 0)) { m + b } else { m })
                }
                O::Pow => {
                    if b < 0 {
                        V::Float((a as f64).powf(b as f64))
                    } else {
                        V::Int(a.checked_pow(u32::try_from(b).map_err(|_| overflow())?).ok_or_else(overflow)?)
                    }
                }
                O::BitAnd if matches!((&l, &r), (V::Bool(_), V::Bool(_))) => V::Bool(a & b != 0),
                O::BitOr if matches!((&l, &r), (V::Bool(_), V::Bool(_))) => V::Bool(a | b != 0),
                O::BitXor if matches!((&l, &r), (V::Bool(_), V::Bool(_))) => V::Bool(a ^ b != 0),
                O::BitAnd => V::Int(a & b),
                O::BitOr => V::Int(a | b),
                O::BitXor => V::Int(a ^ b),
                O::LShift => V::Int(a.checked_shl(b as u32).ok_or_else(overflow)?),
                O::RShift => V::Int(a >> b.min(63)),
                O::MatMult => return Err(type_err("unsupported operand type(s) for @")),
            });
        }
        if let (Some(a), Some(b)) = (num(&l), num(&r)) {
            return Ok(match op {
                O::Add => V::Float(a + b),
                O::Sub => V::Float(a - b),
                O::Mult => V::Float(a * b),
                O::Div => {
                    if b == 0.0 {
                        return Err(err("ZeroDivisionError", "float division by zero"));
                    }
                    V::Float(a / b)
                }
                O::FloorDiv => {
                    if b == 0.0 {
                        return Err(err("ZeroDivisionError", "float floor division by zero"));
                    }
                    V::Float((a / b).floor())
                }
                O::Mod => {
                    if b == 0.0 {
                        return Err(err("ZeroDivisionError", "float modulo"));
                    }
                    let m = a % b;
                    V::Float(if m != 0.0 && ((m < 0.0) != (b < 0.0)) { m + b } else { m })
                }
                O::Pow => V::Float(a.powf(b)),
                _ => return Err(self.bad_operands(op, &l, &r)),
            });
        }
        Ok(match (op, &l, &r) {
            (O::Add, V::Str(a), V::Str(b)) => V::str(&format!("{a}{b}")),
            (O::Mult, V::Str(a), V::Int(n)) | (O::Mult, V::Int(n), V::Str(a)) => V::str(&a.repeat((*n).max(0) as usize)),
            (O::Mod, V::Str(fmt), _) => V::str(&super::builtins::percent_format(self, fmt, &r)?),
            (O::Add, V::List(a), V::List(b)) => {
                let mut v = a.borrow().clone();
                v.extend(b.borrow().iter().cloned());
                V::list(v)
            }
            (O::Add, V::Tuple(a), V::Tuple(b)) => {
                let mut v = (**a).clone();
                v.extend(b.iter().cloned());
                V::tuple(v)
            }
            (O::Mult, V::List(a), V::Int(n)) | (O::Mult, V::Int(n), V::List(a)) => {
                let items = a.borrow();
                let mut v = vec![];
                for _ in 0..(*n).max(0) {
                    v.extend(items.iter().cloned());
                }
                V::list(v)
            }
            (O::Sub | O::BitOr | O::BitAnd | O::BitXor, V::Set(a), V::Set(b)) => {
                let a = a.borrow();
                let b = b.borrow();
                let mut out = Dict::default();
                match op {
                    O::Sub => {
                        for (k, v) in a.iter() {
                            if b.get(&k.hkey().expect("set member")).is_none() {
                                out.insert(k.hkey().expect("set member"), k.clone(), v.clone());
                            }
                        }
                    }
                    O::BitAnd => {
                        for (k, v) in a.iter() {
                            if b.get(&k.hkey().expect("set member")).is_some() {
                                out.insert(k.hkey().expect("set member"), k.clone(), v.clone());
                            }
                        }
                    }
                    O::BitOr => {
                        for (k, v) in a.iter().chain(b.iter()) {
                            out.insert(k.hkey().expect("set member"), k.clone(), v.clone());
                        }
                    }
                    _ => {
                        for (k, v) in a.iter() {
                            if b.get(&k.hkey().expect("set member")).is_none() {
                                out.insert(k.hkey().expect("set member"), k.clone(), v.clone());
                            }
                        }
                        for (k, v) in b.iter() {
                            if a.get(&k.hkey().expect("set member")).is_none() {
                                out.insert(k.hkey().expect("set member"), k.clone(), v.clone());
                            }
                        }
                    }
                }
                V::Set(Rc::new(RefCell::new(out)))
            }
            (O::BitOr, V::Dict(a), V::Dict(b)) => {
                let mut out = a.borrow().clone();
                for (k, v) in b.borrow().iter() {
                    out.insert(k.hkey().expect("dict key"), k.clone(), v.clone());
                }
                V::Dict(Rc::new(RefCell::new(out)))
            }
            (O::Add, V::Date(d), V::TimeDelta(n)) | (O::Add, V::TimeDelta(n), V::Date(d)) => V::Date(add_days(*d, *n)?),
            (O::Sub, V::Date(d), V::TimeDelta(n)) => V::Date(add_days(*d, -*n)?),
            (O::Sub, V::Date(a), V::Date(b)) => V::TimeDelta(b.until(*a).map_err(|e| value_err(e.to_string()))?.get_days() as i64),
            (O::Add, V::TimeDelta(a), V::TimeDelta(b)) => V::TimeDelta(a + b),
            (O::Sub, V::TimeDelta(a), V::TimeDelta(b)) => V::TimeDelta(a - b),
            (O::Mult, V::TimeDelta(a), V::Int(b)) | (O::Mult, V::Int(b), V::TimeDelta(a)) => V::TimeDelta(a * b),
            _ => return Err(self.bad_operands(op, &l, &r)),
        })
    }

    pub fn bad_operands(&self, op: ast::Operator, l: &V, r: &V) -> Flow {
        type_err(format!(
            "unsupported operand type(s) for {}: '{}' and '{}'",
            op.as_str(),
            super::api::python_type_name(self, l),
            super::api::python_type_name(self, r)
        ))
    }

    pub fn compare(&mut self, op: ast::CmpOp, l: &V, r: &V) -> R<V> {
        use ast::CmpOp as C;
        match op {
            C::Is => return Ok(V::Bool(identical(l, r))),
            C::IsNot => return Ok(V::Bool(!identical(l, r))),
            C::In | C::NotIn => {
                let found = self.contains(r, l)?;
                return Ok(V::Bool(if op == C::In { found } else { !found }));
            }
            _ => {}
        }
        if is_ehrql(l) || is_ehrql(r) {
            return super::api::compare(self, op, l.clone(), r.clone());
        }
        Ok(V::Bool(match op {
            C::Eq => self.equal(l, r)?,
            C::NotEq => !self.equal(l, r)?,
            _ => {
                let ord = self.order(l, r)?;
                match op {
                    C::Lt => ord == std::cmp::Ordering::Less,
                    C::LtE => ord != std::cmp::Ordering::Greater,
                    C::Gt => ord == std::cmp::Ordering::Greater,
                    _ => ord != std::cmp::Ordering::Less,
                }
            }
        }))
    }

    pub fn equal(&mut self, l: &V, r: &V) -> R<bool> {
        Ok(match (l, r) {
            (V::List(a), V::List(b)) => {
                let (a, b) = (a.borrow().clone(), b.borrow().clone());
                a.len() == b.len() && {
                    for (x, y) in a.iter().zip(b.iter()) {
                        if !self.equal(x, y)? {
                            return Ok(false);
                        }
                    }
                    true
                }
            }
            (V::Dict(a), V::Dict(b)) => {
                let (a, b) = (a.borrow().clone(), b.borrow().clone());
                a.len == b.len && {
                    for (k, v) in a.iter() {
                        match b.get(&k.hkey().expect("dict key")) {
                            Some(w) if self.equal(v, w)? => {}
                            _ => return Ok(false),
                        }
                    }
                    true
                }
            }
            (V::Set(a), V::Set(b)) => {
                let (a, b) = (a.borrow(), b.borrow());
                a.len == b.len && a.iter().all(|(k, _)| b.get(&k.hkey().expect("set member")).is_some())
            }
            _ => match (l.hkey(), r.hkey()) {
                (Some(a), Some(b)) => a == b,
                _ => identical(l, r),
            },
        })
    }

    pub fn order(&mut self, l: &V, r: &V) -> R<std::cmp::Ordering> {
        use std::cmp::Ordering;
        let num = |v: &V| match v {
            V::Int(i) => Some(*i as f64),
            V::Bool(b) => Some(*b as i64 as f64),
            V::Float(f) => Some(*f),
            _ => None,
        };
        Ok(match (l, r) {
            (V::Int(a), V::Int(b)) => a.cmp(b),
            _ if num(l).is_some() && num(r).is_some() => num(l).partial_cmp(&num(r)).unwrap_or(Ordering::Equal),
            (V::Str(a), V::Str(b)) => a.cmp(b),
            (V::Date(a), V::Date(b)) => a.cmp(b),
            (V::TimeDelta(a), V::TimeDelta(b)) => a.cmp(b),
            (V::List(_), V::List(_)) | (V::Tuple(_), V::Tuple(_)) => {
                let a = self.iterate(l)?;
                let b = self.iterate(r)?;
                for (x, y) in a.iter().zip(b.iter()) {
                    let o = self.order(x, y)?;
                    if o != Ordering::Equal {
                        return Ok(o);
                    }
                }
                a.len().cmp(&b.len())
            }
            _ => {
                return Err(type_err(format!("'<' not supported between instances of '{}' and '{}'", l.type_name(), r.type_name())));
            }
        })
    }

    pub fn contains(&mut self, container: &V, item: &V) -> R<bool> {
        Ok(match container {
            V::Str(s) => match item {
                V::Str(i) => s.contains(&**i),
                other => return Err(type_err(format!("'in <string>' requires string as left operand, not {}", other.type_name()))),
            },
            V::Dict(d) | V::Set(d) => match item.hkey() {
                Some(k) => d.borrow().get(&k).is_some(),
                None => return Err(self.hkey(item).err().unwrap_or_else(|| type_err("unhashable"))),
            },
            V::List(_) | V::Tuple(_) => {
                for x in self.iterate(container)? {
                    if self.equal(&x, item)? {
                        return Ok(true);
                    }
                }
                false
            }
            V::Series(_) | V::Frame(_) => {
                return Err(type_err("`in` cannot be used with ehrQL series; use `.is_in(...)` instead"));
            }
            other => return Err(type_err(format!("argument of type '{}' is not iterable", other.type_name()))),
        })
    }

    pub fn iterate(&mut self, v: &V) -> R<Vec<V>> {
        Ok(match v {
            V::List(l) => l.borrow().clone(),
            V::Tuple(t) => (**t).clone(),
            V::Dict(d) | V::Set(d) => d.borrow().keys(),
            V::Str(s) => s.chars().map(|c| V::str(&c.to_string())).collect(),
            V::Series(_) | V::Frame(_) => {
                return Err(type_err("ehrQL series and frames cannot be iterated over in Python; they describe a query, not values"));
            }
            other => return Err(type_err(format!("'{}' object is not iterable", other.type_name()))),
        })
    }

    pub fn index(&self, key: &V, len: usize) -> R<usize> {
        let i = match key {
            V::Int(i) => *i,
            V::Bool(b) => *b as i64,
            other => return Err(type_err(format!("indices must be integers, not {}", other.type_name()))),
        };
        let j = if i < 0 { i + len as i64 } else { i };
        if j < 0 || j >= len as i64 {
            return Err(err("IndexError", "index out of range"));
        }
        Ok(j as usize)
    }

    fn subscript(&mut self, obj: &V, key: &V) -> R<V> {
        Ok(match obj {
            V::List(l) => {
                let l = l.borrow();
                l[self.index(key, l.len())?].clone()
            }
            V::Tuple(t) => t[self.index(key, t.len())?].clone(),
            V::Str(s) => {
                let chars: Vec<char> = s.chars().collect();
                V::str(&chars[self.index(key, chars.len())?].to_string())
            }
            V::Dict(d) => {
                let k = self.hkey(key)?;
                match d.borrow().get(&k) {
                    Some(v) => v.clone(),
                    None => return Err(err("KeyError", self.repr(key)?)),
                }
            }
            V::Object(o) if o.class == "Namespace" || o.class == "Interval" => {
                return Err(type_err(format!("'{}' object is not subscriptable", o.class)));
            }
            V::Type(_) => obj.clone(), // `list[str]`-style annotations used as values.
            other => return Err(type_err(format!("'{}' object is not subscriptable", other.type_name()))),
        })
    }

    fn slice(&mut self, obj: &V, lower: Option<V>, upper: Option<V>, step: Option<V>) -> R<V> {
        let as_int = |v: Option<V>| -> R<Option<i64>> {
            match v {
                None | Some(V::None) => Ok(None),
                Some(V::Int(i)) => Ok(Some(i)),
                Some(other) => Err(type_err(format!("slice indices must be integers, not {}", other.type_name()))),
            }
        };
        let (lo, hi, st) = (as_int(lower)?, as_int(upper)?, as_int(step)?.unwrap_or(1));
        if st == 0 {
            return Err(value_err("slice step cannot be zero"));
        }
        let pick = |len: usize| -> Vec<usize> {
            let len = len as i64;
            let norm = |x: i64, default: i64, lo_clip: i64, hi_clip: i64| {
                let x = if x < 0 { x + len } else { x };
                let _ = default;
                x.clamp(lo_clip, hi_clip)
            };
            let mut out = vec![];
            if st > 0 {
                let a = lo.map(|x| norm(x, 0, 0, len)).unwrap_or(0);
                let b = hi.map(|x| norm(x, len, 0, len)).unwrap_or(len);
                let mut i = a;
                while i < b {
                    out.push(i as usize);
                    i += st;
                }
            } else {
                let a = lo.map(|x| norm(x, len - 1, -1, len - 1)).unwrap_or(len - 1);
                let b = hi.map(|x| norm(x, -1, -1, len - 1)).unwrap_or(-1);
                let mut i = a;
                while i > b {
                    out.push(i as usize);
                    i += st;
                }
            }
            out
        };
        Ok(match obj {
            V::List(l) => {
                let l = l.borrow();
                V::list(pick(l.len()).into_iter().map(|i| l[i].clone()).collect())
            }
            V::Tuple(t) => V::tuple(pick(t.len()).into_iter().map(|i| t[i].clone()).collect()),
            V::Str(s) => {
                let chars: Vec<char> = s.chars().collect();
                V::str(&pick(chars.len()).into_iter().map(|i| chars[i]).collect::<String>())
            }
            other => return Err(type_err(format!("'{}' object is not subscriptable", other.type_name()))),
        })
    }

    // --- Rendering -------------------------------------------------------------------

    pub fn to_str(&self, v: &V) -> R<String> {
        Ok(match v {
            V::Str(s) => s.to_string(),
            V::Code(_, s) => s.to_string(),
            V::Date(d) => d.to_string(),
            V::TimeDelta(n) => format!("{n} day{}, 0:00:00", if n.abs() == 1 { "" } else { "s" }),
            _ => self.repr(v)?,
        })
    }

    pub fn repr(&self, v: &V) -> R<String> {
        Ok(match v {
            V::None => "None".into(),
            V::Bool(true) => "True".into(),
            V::Bool(false) => "False".into(),
            V::Int(i) => i.to_string(),
            V::Float(f) => float_repr(*f),
            V::Str(s) => py_str_repr(s),
            V::List(l) => format!("[{}]", l.borrow().iter().map(|x| self.repr(x)).collect::<R<Vec<_>>>()?.join(", ")),
            V::Tuple(t) if t.len() == 1 => format!("({},)", self.repr(&t[0])?),
            V::Tuple(t) => format!("({})", t.iter().map(|x| self.repr(x)).collect::<R<Vec<_>>>()?.join(", ")),
            V::Dict(d) => format!(
                "{{{}}}",
                d.borrow().iter().map(|(k, v)| Ok(format!("{}: {}", self.repr(k)?, self.repr(v)?))).collect::<R<Vec<_>>>()?.join(", ")
            ),
            V::Set(d) if d.borrow().len == 0 => "set()".into(),
            V::Set(d) => format!("{{{}}}", d.borrow().iter().map(|(k, _)| self.repr(k)).collect::<R<Vec<_>>>()?.join(", ")),
            V::Date(d) => format!("datetime.date({}, {}, {})", d.year(), d.month(), d.day()),
            V::TimeDelta(n) => format!("datetime.timedelta(days={n})"),
            V::Code(c, s) => format!("{}({})", c.class_name(), py_str_repr(s)),
            V::Function(f) => format!("<function {}>", f.name),
            V::Module(m) => format!("<module '{}'>", m.name),
            V::Type(t) => format!("<class '{t}'>"),
            V::Object(o) if o.class == "Namespace" => format!(
                "Namespace({})",
                o.attrs.borrow().iter().map(|(k, v)| Ok(format!("{k}={}", self.repr(v)?))).collect::<R<Vec<_>>>()?.join(", ")
            ),
            other => format!("<{}>", super::api::python_type_name(self, other)),
        })
    }

    /// `format(v, spec)` for the format-spec mini-language's common forms.
    pub fn format_value(&self, v: &V, spec: &str) -> R<String> {
        if spec.is_empty() {
            return match v {
                V::Date(d) => Ok(d.to_string()),
                _ => self.to_str(v),
            };
        }
        let b: Vec<char> = spec.chars().collect();
        let mut i = 0;
        let mut fill = ' ';
        let mut align = None;
        if b.len() >= 2 && matches!(b[1], '<' | '>' | '^' | '=') {
            fill = b[0];
            align = Some(b[1]);
            i = 2;
        } else if !b.is_empty() && matches!(b[0], '<' | '>' | '^' | '=') {
            align = Some(b[0]);
            i = 1;
        }
        let mut sign = '-';
        if i < b.len() && matches!(b[i], '+' | '-' | ' ') {
            sign = b[i];
            i += 1;
        }
        if i < b.len() && b[i] == '0' {
            fill = '0';
            if align.is_none() {
                align = Some('=');
            }
            i += 1;
        }
        let mut width = 0usize;
        while i < b.len() && b[i].is_ascii_digit() {
            width = width * 10 + b[i].to_digit(10).unwrap_or(0) as usize;
            i += 1;
        }
        let mut grouping = None;
        if i < b.len() && matches!(b[i], ',' | '_') {
            grouping = Some(b[i]);
            i += 1;
        }
        let mut precision = None;
        if i < b.len() && b[i] == '.' {
            i += 1;
            let mut p = 0usize;
            while i < b.len() && b[i].is_ascii_digit() {
                p = p * 10 + b[i].to_digit(10).unwrap_or(0) as usize;
                i += 1;
            }
            precision = Some(p);
        }
        let ty = b.get(i).copied();
        if i + ty.map_or(0, |_| 1) != b.len() {
            return Err(value_err(format!("Invalid format specifier '{spec}'")));
        }
        let (negative, body, numeric) = match (v, ty) {
            (V::Int(n), None | Some('d')) => (*n < 0, n.unsigned_abs().to_string(), true),
            (V::Bool(x), Some('d')) => (false, (*x as i64).to_string(), true),
            (V::Int(_) | V::Float(_) | V::Bool(_), Some('f' | 'F' | '%' | 'e' | 'g')) | (V::Float(_), None) => {
                let f = match v {
                    V::Int(n) => *n as f64,
                    V::Bool(x) => *x as i64 as f64,
                    V::Float(f) => *f,
                    _ => 0.0,
                };
                let body = match ty {
                    Some('%') => format!("{:.*}%", precision.unwrap_or(6), (f * 100.0).abs()),
                    Some('e') => {
                        let s = format!("{:.*e}", precision.unwrap_or(6), f.abs());
                        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
                        let e: i32 = e.parse().unwrap_or(0);
                        format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
                    }
                    None | Some('g') if precision.is_none() => float_repr(f.abs()),
                    _ => format!("{:.*}", precision.unwrap_or(6), f.abs()),
                };
                (f.is_sign_negative() && f != 0.0, body, true)
            }
            (V::Str(s), None | Some('s')) => {
                let s: String = match precision {
                    Some(p) => s.chars().take(p).collect(),
                    None => s.to_string(),
                };
                (false, s, false)
            }
            (V::Date(d), _) if ty.is_none() => (false, d.to_string(), false),
            _ => return Err(value_err(format!("Unknown format code '{}' for object of type '{}'", ty.unwrap_or(' '), v.type_name()))),
        };
        let body = match grouping {
            Some(g) if numeric => {
                let (int_part, rest) = match body.find('.') {
                    Some(p) => (&body[..p], &body[p..]),
                    None => (body.as_str(), ""),
                };
                let mut grouped = String::new();
                for (k, c) in int_part.chars().enumerate() {
                    if k > 0 && (int_part.len() - k) % 3 == 0 {
                        grouped.push(g);
                    }
                    grouped.push(c);
                }
                format!("{grouped}{rest}")
            }
            _ => body,
        };
        let sign_str = match (negative, sign) {
            (true, _) => "-",
            (false, '+') if numeric => "+",
            (false, ' ') if numeric => " ",
            _ => "",
        };
        let len = sign_str.chars().count() + body.chars().count();
        if len >= width {
            return Ok(format!("{sign_str}{body}"));
        }
        let pad = width - len;
        let padding = |n: usize| fill.to_string().repeat(n);
        Ok(match align.unwrap_or(if numeric { '>' } else { '<' }) {
            '<' => format!("{sign_str}{body}{}", padding(pad)),
            '^' => format!("{}{sign_str}{body}{}", padding(pad / 2), padding(pad - pad / 2)),
            '=' => format!("{sign_str}{}{body}", padding(pad)),
            _ => format!("{}{sign_str}{body}", padding(pad)),
        })
    }

    /// `file:line:col` and the source line of an error location.
    pub fn describe_location(&self, loc: Option<(usize, TextSize)>) -> Option<(String, String)> {
        let (file, offset) = loc?;
        let f = self.files.get(file)?;
        let (line, col) = f.line_col(offset);
        Some((format!("{}:{line}:{col}", f.shown), f.line(line).to_string()))
    }
}

pub fn is_ehrql(v: &V) -> bool {
    matches!(
        v,
        V::Series(_)
            | V::Frame(_)
            | V::Duration(_)
            | V::DateDifference(..)
            | V::When(_)
            | V::WhenThen(..)
            | V::CaseOtherwise(_)
            | V::Dataset(_)
    )
}

fn identical(l: &V, r: &V) -> bool {
    match (l, r) {
        (V::None, V::None) => true,
        (V::Bool(a), V::Bool(b)) => a == b,
        (V::List(a), V::List(b)) => Rc::ptr_eq(a, b),
        (V::Dict(a), V::Dict(b)) => Rc::ptr_eq(a, b),
        (V::Type(a), V::Type(b)) => a == b,
        (V::Series(a), V::Series(b)) => a == b,
        (V::Int(a), V::Int(b)) => a == b,
        (V::Str(a), V::Str(b)) => a == b,
        _ => false,
    }
}

fn exception_matches(handler: &V, kind: &str) -> bool {
    match handler {
        V::Tuple(items) => items.iter().any(|h| exception_matches(h, kind)),
        V::Type(t) => super::builtins::exception_is_subclass(kind, t),
        _ => false,
    }
}

pub fn add_days(d: jiff::civil::Date, n: i64) -> R<jiff::civil::Date> {
    d.checked_add(jiff::Span::new().days(n)).map_err(|_| err("OverflowError", "date value out of range"))
}

pub fn py_str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::new();
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}
