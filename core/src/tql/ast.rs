//! The syntax tree of a TQL query. Every expression keeps the character position where
//! it starts, so planning and run-time errors can point into the query text.

#[derive(Clone, Debug, PartialEq)]
pub enum Lit {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Concat,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Or => "OR",
            BinOp::And => "AND",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Mod => "%",
            BinOp::Pow => "^",
            BinOp::Concat => "||",
        }
    }
}

/// One position of a NumPy-style index: `i`, or `start:stop:step` with any part absent.
#[derive(Clone, Debug, PartialEq)]
pub enum IndexItem {
    At(Expr),
    Slice {
        start: Option<Expr>,
        stop: Option<Expr>,
        step: Option<Expr>,
    },
}

/// A function argument: an expression, or `condition: weight` (MAX_WEIGHT / SUM_WEIGHT).
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    Expr(Expr),
    Weighted(Expr, Expr),
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    Lit(Lit),
    /// A tensor or a select-list alias; `t.col` keeps the qualifier.
    Column {
        qualifier: Option<String>,
        name: String,
    },
    /// `*` inside a function call (`COUNT(*)`).
    Star,
    Neg(Box<Expr>),
    Not(Box<Expr>),
    Binary {
        op: BinOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    Func {
        name: String,
        args: Vec<Arg>,
    },
    /// `x[i, a:b, ::s]` as one index, apart from chained `x[i][j]`.
    Index {
        base: Box<Expr>,
        items: Vec<IndexItem>,
    },
    Array(Vec<Expr>),
    InList {
        expr: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
    Between {
        expr: Box<Expr>,
        low: Box<Expr>,
        high: Box<Expr>,
        negated: bool,
    },
    IsNull {
        expr: Box<Expr>,
        negated: bool,
    },
    Like {
        expr: Box<Expr>,
        pattern: Box<Expr>,
        case_insensitive: bool,
        negated: bool,
    },
    Case {
        operand: Option<Box<Expr>>,
        whens: Vec<(Expr, Expr)>,
        otherwise: Option<Box<Expr>>,
    },
    /// The planner's stand-in for the k-th GROUP BY expression inside a grouped select.
    GroupKey(usize),
    /// A sub-expression the planner evaluated once (constant folding).
    Const(super::value::Val),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    /// Character offset in the query text.
    pub pos: usize,
}

impl Expr {
    pub fn new(kind: ExprKind, pos: usize) -> Self {
        Expr { kind, pos }
    }

    /// The direct sub-expressions.
    pub fn children_mut(&mut self) -> Vec<&mut Expr> {
        match &mut self.kind {
            ExprKind::Neg(x) | ExprKind::Not(x) => vec![x],
            ExprKind::Binary { left, right, .. } => vec![left, right],
            ExprKind::Func { args, .. } => args
                .iter_mut()
                .flat_map(|a| match a {
                    Arg::Expr(x) => vec![x],
                    Arg::Weighted(c, w) => vec![c, w],
                })
                .collect(),
            ExprKind::Index { base, items } => {
                let mut v: Vec<&mut Expr> = vec![base];
                for it in items {
                    match it {
                        IndexItem::At(x) => v.push(x),
                        IndexItem::Slice { start, stop, step } => {
                            v.extend([start, stop, step].into_iter().flatten());
                        }
                    }
                }
                v
            }
            ExprKind::Array(items) => items.iter_mut().collect(),
            ExprKind::InList { expr, list, .. } => {
                let mut v: Vec<&mut Expr> = vec![expr];
                v.extend(list.iter_mut());
                v
            }
            ExprKind::Between {
                expr, low, high, ..
            } => vec![expr, low, high],
            ExprKind::IsNull { expr, .. } => vec![expr],
            ExprKind::Like { expr, pattern, .. } => vec![expr, pattern],
            ExprKind::Case {
                operand,
                whens,
                otherwise,
            } => {
                let mut v: Vec<&mut Expr> = Vec::new();
                if let Some(o) = operand {
                    v.push(o);
                }
                for (c, t) in whens {
                    v.push(c);
                    v.push(t);
                }
                if let Some(o) = otherwise {
                    v.push(o);
                }
                v
            }
            ExprKind::Lit(_)
            | ExprKind::Column { .. }
            | ExprKind::Star
            | ExprKind::GroupKey(_)
            | ExprKind::Const(_) => Vec::new(),
        }
    }

    /// The same expression with every position zeroed, to compare structure.
    pub fn without_positions(&self) -> Expr {
        let mut e = self.clone();
        fn zero(e: &mut Expr) {
            e.pos = 0;
            for c in e.children_mut() {
                zero(c);
            }
        }
        zero(&mut e);
        e
    }

    /// Replaces every sub-expression equal (up to positions) to `keys[k]` with
    /// `GroupKey(k)`.
    pub fn replace_group_keys(&mut self, keys: &[Expr]) {
        let me = self.without_positions();
        if let Some(k) = keys.iter().position(|g| *g == me) {
            self.kind = ExprKind::GroupKey(k);
            return;
        }
        for c in self.children_mut() {
            c.replace_group_keys(keys);
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum SelectItem {
    /// `*` or `t.*`.
    Star(Option<String>),
    Expr {
        expr: Expr,
        alias: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    Left,
    Right,
    Full,
    Cross,
}

#[derive(Clone, Debug, PartialEq)]
pub enum FromClause {
    /// `"url"` or `"url@version"`.
    Source {
        url: String,
        version: Option<String>,
        alias: Option<String>,
        pos: usize,
    },
    Subquery {
        query: Box<Query>,
        alias: Option<String>,
    },
    /// `DIFF('ref_a', 'ref_b')`: the rows that changed from `a` to `b` (since their common
    /// ancestor), with a `change` column: added / updated rows of `b`, deleted rows of the
    /// ancestor.
    Diff { a: String, b: String, pos: usize },
    Join {
        left: Box<FromClause>,
        right: Box<FromClause>,
        kind: JoinKind,
        on: Option<Expr>,
        using: Vec<String>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct OrderKey {
    pub expr: Expr,
    pub desc: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SampleClause {
    pub weight: Expr,
    /// Replacement is the default, as in the reference engine.
    pub replace: bool,
    pub limit: Option<u64>,
    pub percent: bool,
    pub seed: Option<u64>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Ungroup {
    Split,
    By(Expr),
}

/// The clauses that may follow a select or a set operation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tail {
    pub order_by: Vec<OrderKey>,
    pub limit: Option<u64>,
    pub offset: Option<u64>,
    pub sample: Option<SampleClause>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Select {
    pub top: Option<u64>,
    pub distinct: bool,
    pub items: Vec<SelectItem>,
    pub from: Option<FromClause>,
    pub filter: Option<Expr>,
    /// v3 EXPAND BY: rows before and after each match.
    pub expand: Option<(u64, u64)>,
    pub group_by: Vec<Expr>,
    pub having: Option<Expr>,
    pub ungroup: Option<Ungroup>,
    pub tail: Tail,
    /// Position of the SELECT keyword.
    pub pos: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetOp {
    Union,
    Intersect,
    Except,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Query {
    Select(Box<Select>),
    Set {
        op: SetOp,
        left: Box<Query>,
        right: Box<Query>,
        tail: Tail,
    },
    /// `EXPLAIN query`.
    Explain(Box<Query>),
}
