//! Recursive descent for statements, precedence climbing for expressions.
//!
//! Precedence, lowest first: OR, AND, NOT, `== != LIKE ILIKE IN BETWEEN IS`,
//! `< > <= >=`, `+ -`, `* / %`, `^`, `||`, unary minus, `[]`. A syntax error says where
//! (character position), what was found and what was expected. Nesting is bounded, so
//! a hostile query cannot exhaust the stack.

use super::ast::*;
use super::lexer::{Tok, Token, char_pos, lex};
use crate::error::{Error, QueryErrorKind, Result};

/// Deepest nesting of expressions and subqueries.
const MAX_DEPTH: usize = 64;

pub fn parse(text: &str) -> Result<Query> {
    let toks = lex(text)?;
    let mut p = Parser {
        text,
        toks,
        i: 0,
        depth: 0,
    };
    let q = if p.eat_kw("EXPLAIN") {
        Query::Explain(Box::new(p.query()?))
    } else {
        p.query()?
    };
    p.eat_sym(";");
    if p.peek() != &Tok::End {
        return Err(p.unexpected("end of query"));
    }
    Ok(q)
}

/// Words that end an expression or a select item rather than name a column.
const RESERVED: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "GROUP",
    "ORDER",
    "BY",
    "LIMIT",
    "OFFSET",
    "SAMPLE",
    "UNGROUP",
    "EXPAND",
    "HAVING",
    "UNION",
    "INTERSECT",
    "EXCEPT",
    "AND",
    "OR",
    "NOT",
    "AS",
    "ASC",
    "DESC",
    "LIKE",
    "ILIKE",
    "IN",
    "IS",
    "BETWEEN",
    "ON",
    "JOIN",
    "INNER",
    "LEFT",
    "RIGHT",
    "FULL",
    "CROSS",
    "USING",
    "REPLACE",
    "PERCENT",
    "CASE",
    "WHEN",
    "THEN",
    "ELSE",
    "END",
    "TOP",
    "SEED",
];

struct Parser<'a> {
    text: &'a str,
    toks: Vec<Token>,
    i: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.i.min(self.toks.len() - 1)].tok
    }

    fn peek_at(&self, k: usize) -> &Tok {
        &self.toks[(self.i + k).min(self.toks.len() - 1)].tok
    }

    fn pos(&self) -> usize {
        char_pos(self.text, self.toks[self.i.min(self.toks.len() - 1)].pos)
    }

    fn bump(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.i < self.toks.len() - 1 {
            self.i += 1;
        }
        t
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
    }

    fn is_kw_at(&self, k: usize, kw: &str) -> bool {
        matches!(self.peek_at(k), Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        if self.is_kw(kw) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn expect_kw(&mut self, kw: &str) -> Result<()> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            Err(self.unexpected(kw))
        }
    }

    fn eat_sym(&mut self, s: &str) -> bool {
        if matches!(self.peek(), Tok::Sym(x) if *x == s) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn is_sym(&self, s: &str) -> bool {
        matches!(self.peek(), Tok::Sym(x) if *x == s)
    }

    fn expect_sym(&mut self, s: &str) -> Result<()> {
        if self.eat_sym(s) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("'{s}'")))
        }
    }

    fn unexpected(&self, expected: &str) -> Error {
        Error::query(
            QueryErrorKind::Syntax,
            Some(self.pos()),
            format!(
                "unexpected {}, expecting {expected}",
                self.peek().describe()
            ),
        )
    }

    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Error::query(
                QueryErrorKind::Syntax,
                Some(self.pos()),
                format!("query nests deeper than {MAX_DEPTH} levels"),
            ));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    fn uint(&mut self, what: &str) -> Result<u64> {
        match self.peek().clone() {
            Tok::Int(n) if n >= 0 => {
                self.bump();
                Ok(n as u64)
            }
            _ => Err(self.unexpected(what)),
        }
    }

    // ---- statements ----

    fn query(&mut self) -> Result<Query> {
        self.enter()?;
        let mut q = self.query_term()?;
        loop {
            let op = if self.eat_kw("UNION") {
                SetOp::Union
            } else if self.eat_kw("INTERSECT") {
                SetOp::Intersect
            } else if self.eat_kw("EXCEPT") {
                SetOp::Except
            } else {
                break;
            };
            // `UNION ALL` / `UNION DISTINCT` read like plain UNION here.
            let _ = self.eat_kw("ALL") || self.eat_kw("DISTINCT");
            let right = self.query_term()?;
            q = Query::Set {
                op,
                left: Box::new(q),
                right: Box::new(right),
                tail: Tail::default(),
            };
        }
        if let Query::Set { tail, .. } = &mut q {
            *tail = self.tail()?;
        }
        self.leave();
        Ok(q)
    }

    fn query_term(&mut self) -> Result<Query> {
        if self.is_sym("(") {
            self.bump();
            let q = self.query()?;
            self.expect_sym(")")?;
            return Ok(q);
        }
        if !self.is_kw("SELECT") {
            return Err(self.unexpected("SELECT or '('"));
        }
        Ok(Query::Select(Box::new(self.select()?)))
    }

    fn select(&mut self) -> Result<Select> {
        let pos = self.pos();
        self.expect_kw("SELECT")?;
        let top = if self.eat_kw("TOP") {
            Some(self.uint("a row count after TOP")?)
        } else {
            None
        };
        let distinct = self.eat_kw("DISTINCT");
        let mut items = vec![self.select_item()?];
        while self.eat_sym(",") {
            items.push(self.select_item()?);
        }
        let from = if self.eat_kw("FROM") {
            Some(self.source_clause()?)
        } else {
            None
        };
        let filter = if self.eat_kw("WHERE") {
            Some(self.expr()?)
        } else {
            None
        };
        let expand = if self.is_kw("EXPAND") && self.is_kw_at(1, "BY") {
            self.bump();
            self.bump();
            let before = self.uint("a row count after EXPAND BY")?;
            let after = match self.peek() {
                Tok::Int(_) => self.uint("a row count")?,
                _ => before,
            };
            Some((before, after))
        } else {
            None
        };
        let mut group_by = Vec::new();
        let mut having = None;
        if self.is_kw("GROUP") && self.is_kw_at(1, "BY") {
            self.bump();
            self.bump();
            group_by.push(self.expr()?);
            while self.eat_sym(",") {
                group_by.push(self.expr()?);
            }
            if self.eat_kw("HAVING") {
                having = Some(self.expr()?);
            }
        }
        let ungroup = if self.is_kw("UNGROUP") && self.is_kw_at(1, "BY") {
            self.bump();
            self.bump();
            if self.eat_kw("SPLIT") {
                Some(Ungroup::Split)
            } else {
                Some(Ungroup::By(self.expr()?))
            }
        } else {
            None
        };
        let tail = self.tail()?;
        Ok(Select {
            top,
            distinct,
            items,
            from,
            filter,
            expand,
            group_by,
            having,
            ungroup,
            tail,
            pos,
        })
    }

    fn tail(&mut self) -> Result<Tail> {
        let mut t = Tail::default();
        if self.is_kw("ORDER") && self.is_kw_at(1, "BY") {
            self.bump();
            self.bump();
            loop {
                let expr = self.expr()?;
                let desc = if self.eat_kw("DESC") {
                    true
                } else {
                    self.eat_kw("ASC");
                    false
                };
                t.order_by.push(OrderKey { expr, desc });
                if !self.eat_sym(",") {
                    break;
                }
            }
        }
        if self.eat_kw("LIMIT") && !self.eat_kw("ALL") {
            t.limit = Some(self.uint("a row count after LIMIT")?);
        }
        if self.eat_kw("OFFSET") {
            t.offset = Some(self.uint("a row count after OFFSET")?);
        }
        if self.is_kw("SAMPLE") && self.is_kw_at(1, "BY") {
            self.bump();
            self.bump();
            let weight = self.expr()?;
            let mut s = SampleClause {
                weight,
                replace: true,
                limit: None,
                percent: false,
                seed: None,
            };
            if self.eat_kw("REPLACE") {
                s.replace = if self.eat_kw("FALSE") {
                    false
                } else {
                    self.eat_kw("TRUE");
                    true
                };
            }
            if self.eat_kw("LIMIT") {
                s.limit = Some(self.uint("a sample size after LIMIT")?);
                s.percent = self.eat_kw("PERCENT");
            }
            if self.eat_kw("SEED") {
                s.seed = Some(self.uint("a seed after SEED")?);
            }
            t.sample = Some(s);
        }
        Ok(t)
    }

    fn select_item(&mut self) -> Result<SelectItem> {
        if self.eat_sym("*") {
            return Ok(SelectItem::Star(None));
        }
        if let (Tok::Ident(q), Tok::Sym("."), Tok::Sym("*")) =
            (self.peek().clone(), self.peek_at(1), self.peek_at(2))
        {
            self.bump();
            self.bump();
            self.bump();
            return Ok(SelectItem::Star(Some(q)));
        }
        let expr = self.expr()?;
        let alias = if self.eat_kw("AS") {
            Some(self.name("an alias after AS")?)
        } else {
            match self.peek().clone() {
                Tok::Ident(s) if !is_reserved(&s) => {
                    self.bump();
                    Some(s)
                }
                _ => None,
            }
        };
        Ok(SelectItem::Expr { expr, alias })
    }

    fn name(&mut self, what: &str) -> Result<String> {
        match self.peek().clone() {
            Tok::Ident(s) | Tok::Quoted(s) => {
                self.bump();
                Ok(s)
            }
            _ => Err(self.unexpected(what)),
        }
    }

    fn source_clause(&mut self) -> Result<FromClause> {
        let mut left = self.source_item()?;
        loop {
            let kind = if self.eat_kw("JOIN") {
                JoinKind::Inner
            } else if self.eat_kw("INNER") {
                self.expect_kw("JOIN")?;
                JoinKind::Inner
            } else if self.is_kw("LEFT") || self.is_kw("RIGHT") || self.is_kw("FULL") {
                let k = match self.bump() {
                    Tok::Ident(s) if s.eq_ignore_ascii_case("LEFT") => JoinKind::Left,
                    Tok::Ident(s) if s.eq_ignore_ascii_case("RIGHT") => JoinKind::Right,
                    _ => JoinKind::Full,
                };
                self.eat_kw("OUTER");
                self.expect_kw("JOIN")?;
                k
            } else if self.eat_kw("CROSS") {
                self.expect_kw("JOIN")?;
                JoinKind::Cross
            } else {
                break;
            };
            let right = self.source_item()?;
            let (mut on, mut using) = (None, Vec::new());
            if kind != JoinKind::Cross {
                if self.eat_kw("ON") {
                    on = Some(self.expr()?);
                } else if self.eat_kw("USING") {
                    self.expect_sym("(")?;
                    using.push(self.name("a column name")?);
                    while self.eat_sym(",") {
                        using.push(self.name("a column name")?);
                    }
                    self.expect_sym(")")?;
                } else {
                    return Err(self.unexpected("ON or USING"));
                }
            }
            left = FromClause::Join {
                left: Box::new(left),
                right: Box::new(right),
                kind,
                on,
                using,
            };
        }
        Ok(left)
    }

    fn source_item(&mut self) -> Result<FromClause> {
        let item = match self.peek().clone() {
            Tok::Sym("(") => {
                self.bump();
                let q = self.query()?;
                self.expect_sym(")")?;
                FromClause::Subquery {
                    query: Box::new(q),
                    alias: None,
                }
            }
            Tok::Quoted(s) | Tok::Str(s) => {
                let pos = self.pos();
                self.bump();
                let (url, version) = split_version(&s);
                FromClause::Source {
                    url,
                    version,
                    alias: None,
                    pos,
                }
            }
            Tok::Ident(s)
                if s.eq_ignore_ascii_case("DIFF") && matches!(self.peek_at(1), Tok::Sym("(")) =>
            {
                let pos = self.pos();
                self.bump();
                self.bump();
                let a = self.version_name()?;
                self.expect_sym(",")?;
                let b = self.version_name()?;
                self.expect_sym(")")?;
                return Ok(FromClause::Diff { a, b, pos });
            }
            Tok::Ident(s) if !is_reserved(&s) => {
                let pos = self.pos();
                self.bump();
                let (url, version) = split_version(&s);
                FromClause::Source {
                    url,
                    version,
                    alias: None,
                    pos,
                }
            }
            _ => return Err(self.unexpected("a dataset or a subquery after FROM")),
        };
        let alias = if self.eat_kw("AS") {
            Some(self.name("an alias after AS")?)
        } else {
            match self.peek().clone() {
                Tok::Ident(s) if !is_reserved(&s) => {
                    self.bump();
                    Some(s)
                }
                _ => None,
            }
        };
        Ok(match item {
            FromClause::Source {
                url, version, pos, ..
            } => FromClause::Source {
                url,
                version,
                alias,
                pos,
            },
            FromClause::Subquery { query, .. } => FromClause::Subquery { query, alias },
            other => other,
        })
    }

    fn version_name(&mut self) -> Result<String> {
        match self.peek().clone() {
            Tok::Str(s) | Tok::Quoted(s) | Tok::Ident(s) => {
                self.bump();
                Ok(s)
            }
            _ => Err(self.unexpected("a branch, commit or tag")),
        }
    }

    // ---- expressions ----

    fn expr(&mut self) -> Result<Expr> {
        self.enter()?;
        let e = self.or_expr();
        self.leave();
        e
    }

    fn or_expr(&mut self) -> Result<Expr> {
        let mut l = self.and_expr()?;
        while self.is_kw("OR") {
            let pos = self.pos();
            self.bump();
            let r = self.and_expr()?;
            l = bin(BinOp::Or, l, r, pos);
        }
        Ok(l)
    }

    fn and_expr(&mut self) -> Result<Expr> {
        let mut l = self.not_expr()?;
        while self.is_kw("AND") {
            let pos = self.pos();
            self.bump();
            let r = self.not_expr()?;
            l = bin(BinOp::And, l, r, pos);
        }
        Ok(l)
    }

    fn not_expr(&mut self) -> Result<Expr> {
        if self.is_kw("NOT") {
            let pos = self.pos();
            self.bump();
            self.enter()?;
            let e = self.not_expr();
            self.leave();
            return Ok(Expr::new(ExprKind::Not(Box::new(e?)), pos));
        }
        self.equality()
    }

    fn equality(&mut self) -> Result<Expr> {
        let mut l = self.relational()?;
        loop {
            let pos = self.pos();
            if self.eat_sym("==") {
                let r = self.relational()?;
                l = bin(BinOp::Eq, l, r, pos);
            } else if self.eat_sym("!=") || self.eat_sym("<>") {
                let r = self.relational()?;
                l = bin(BinOp::Ne, l, r, pos);
            } else if self.is_kw("IS") {
                self.bump();
                let negated = self.eat_kw("NOT");
                self.expect_kw("NULL")?;
                l = Expr::new(
                    ExprKind::IsNull {
                        expr: Box::new(l),
                        negated,
                    },
                    pos,
                );
            } else {
                let negated = self.is_kw("NOT")
                    && (self.is_kw_at(1, "LIKE")
                        || self.is_kw_at(1, "ILIKE")
                        || self.is_kw_at(1, "IN")
                        || self.is_kw_at(1, "BETWEEN"));
                if negated {
                    self.bump();
                }
                if self.is_kw("LIKE") || self.is_kw("ILIKE") {
                    let ci = self.is_kw("ILIKE");
                    self.bump();
                    let pattern = self.relational()?;
                    l = Expr::new(
                        ExprKind::Like {
                            expr: Box::new(l),
                            pattern: Box::new(pattern),
                            case_insensitive: ci,
                            negated,
                        },
                        pos,
                    );
                } else if self.eat_kw("IN") {
                    let list = if self.is_kw("ARRAY") {
                        // The v3 form `x IN ARRAY[...]`.
                        match self.primary()?.kind {
                            ExprKind::Array(items) => items,
                            _ => return Err(self.unexpected("'['")),
                        }
                    } else {
                        self.expect_sym("(")?;
                        let mut list = vec![self.expr()?];
                        while self.eat_sym(",") {
                            list.push(self.expr()?);
                        }
                        self.expect_sym(")")?;
                        list
                    };
                    l = Expr::new(
                        ExprKind::InList {
                            expr: Box::new(l),
                            list,
                            negated,
                        },
                        pos,
                    );
                } else if self.eat_kw("BETWEEN") {
                    let low = self.relational()?;
                    self.expect_kw("AND")?;
                    let high = self.relational()?;
                    l = Expr::new(
                        ExprKind::Between {
                            expr: Box::new(l),
                            low: Box::new(low),
                            high: Box::new(high),
                            negated,
                        },
                        pos,
                    );
                } else {
                    return Ok(l);
                }
            }
        }
    }

    fn relational(&mut self) -> Result<Expr> {
        let mut l = self.additive()?;
        loop {
            let pos = self.pos();
            let op = match self.peek() {
                Tok::Sym("<") => BinOp::Lt,
                Tok::Sym("<=") => BinOp::Le,
                Tok::Sym(">") => BinOp::Gt,
                Tok::Sym(">=") => BinOp::Ge,
                _ => return Ok(l),
            };
            self.bump();
            let r = self.additive()?;
            l = bin(op, l, r, pos);
        }
    }

    fn additive(&mut self) -> Result<Expr> {
        let mut l = self.multiplicative()?;
        loop {
            let pos = self.pos();
            let op = match self.peek() {
                Tok::Sym("+") => BinOp::Add,
                Tok::Sym("-") => BinOp::Sub,
                _ => return Ok(l),
            };
            self.bump();
            let r = self.multiplicative()?;
            l = bin(op, l, r, pos);
        }
    }

    fn multiplicative(&mut self) -> Result<Expr> {
        let mut l = self.power()?;
        loop {
            let pos = self.pos();
            let op = match self.peek() {
                Tok::Sym("*") => BinOp::Mul,
                Tok::Sym("/") => BinOp::Div,
                Tok::Sym("%") => BinOp::Mod,
                _ => return Ok(l),
            };
            self.bump();
            let r = self.power()?;
            l = bin(op, l, r, pos);
        }
    }

    fn power(&mut self) -> Result<Expr> {
        let mut l = self.concat()?;
        while self.is_sym("^") {
            let pos = self.pos();
            self.bump();
            let r = self.concat()?;
            l = bin(BinOp::Pow, l, r, pos);
        }
        Ok(l)
    }

    fn concat(&mut self) -> Result<Expr> {
        let mut l = self.unary()?;
        while self.is_sym("||") {
            let pos = self.pos();
            self.bump();
            let r = self.unary()?;
            l = bin(BinOp::Concat, l, r, pos);
        }
        Ok(l)
    }

    fn unary(&mut self) -> Result<Expr> {
        if self.is_sym("-") || self.is_sym("+") {
            let pos = self.pos();
            let neg = self.is_sym("-");
            self.bump();
            self.enter()?;
            let e = self.unary();
            self.leave();
            let e = e?;
            return Ok(match (neg, e.kind) {
                (true, ExprKind::Lit(Lit::Int(i))) => Expr::new(ExprKind::Lit(Lit::Int(-i)), pos),
                (true, ExprKind::Lit(Lit::Float(f))) => {
                    Expr::new(ExprKind::Lit(Lit::Float(-f)), pos)
                }
                (true, kind) => Expr::new(ExprKind::Neg(Box::new(Expr::new(kind, e.pos))), pos),
                (false, kind) => Expr::new(kind, e.pos),
            });
        }
        self.postfix()
    }

    fn postfix(&mut self) -> Result<Expr> {
        let mut e = self.primary()?;
        while self.is_sym("[") {
            let pos = self.pos();
            self.bump();
            let mut items = vec![self.index_item()?];
            while self.eat_sym(",") {
                items.push(self.index_item()?);
            }
            self.expect_sym("]")?;
            e = Expr::new(
                ExprKind::Index {
                    base: Box::new(e),
                    items,
                },
                pos,
            );
        }
        Ok(e)
    }

    fn index_item(&mut self) -> Result<IndexItem> {
        let bound = |p: &mut Self| -> Result<Option<Expr>> {
            if p.is_sym(":") || p.is_sym(",") || p.is_sym("]") {
                Ok(None)
            } else {
                p.expr().map(Some)
            }
        };
        let start = bound(self)?;
        if !self.eat_sym(":") {
            return match start {
                Some(e) => Ok(IndexItem::At(e)),
                None => Err(self.unexpected("an index")),
            };
        }
        let stop = bound(self)?;
        let step = if self.eat_sym(":") {
            bound(self)?
        } else {
            None
        };
        Ok(IndexItem::Slice { start, stop, step })
    }

    fn primary(&mut self) -> Result<Expr> {
        let pos = self.pos();
        match self.peek().clone() {
            Tok::Int(i) => {
                self.bump();
                Ok(Expr::new(ExprKind::Lit(Lit::Int(i)), pos))
            }
            Tok::Float(f) => {
                self.bump();
                Ok(Expr::new(ExprKind::Lit(Lit::Float(f)), pos))
            }
            Tok::Str(s) => {
                self.bump();
                Ok(Expr::new(ExprKind::Lit(Lit::Str(s)), pos))
            }
            Tok::Quoted(s) => {
                self.bump();
                Ok(Expr::new(
                    ExprKind::Column {
                        qualifier: None,
                        name: s,
                    },
                    pos,
                ))
            }
            Tok::Sym("(") => {
                self.bump();
                let e = self.expr()?;
                self.expect_sym(")")?;
                Ok(e)
            }
            Tok::Sym("*") => {
                self.bump();
                Ok(Expr::new(ExprKind::Star, pos))
            }
            Tok::Ident(w) => {
                let up = w.to_ascii_uppercase();
                match up.as_str() {
                    "NULL" => {
                        self.bump();
                        return Ok(Expr::new(ExprKind::Lit(Lit::Null), pos));
                    }
                    "TRUE" | "FALSE" => {
                        self.bump();
                        return Ok(Expr::new(ExprKind::Lit(Lit::Bool(up == "TRUE")), pos));
                    }
                    "ARRAY" if matches!(self.peek_at(1), Tok::Sym("[")) => {
                        self.bump();
                        return self.array_literal(pos);
                    }
                    "CASE" => {
                        self.bump();
                        return self.case(pos);
                    }
                    _ => {}
                }
                if is_reserved(&w) {
                    return Err(self.unexpected("an expression"));
                }
                self.bump();
                if self.is_sym("(") {
                    self.bump();
                    let mut args = Vec::new();
                    if !self.eat_sym(")") {
                        loop {
                            let a = self.expr()?;
                            if self.eat_sym(":") {
                                let w = self.expr()?;
                                args.push(Arg::Weighted(a, w));
                            } else {
                                args.push(Arg::Expr(a));
                            }
                            if !self.eat_sym(",") {
                                break;
                            }
                        }
                        self.expect_sym(")")?;
                    }
                    return Ok(Expr::new(ExprKind::Func { name: up, args }, pos));
                }
                if self.is_sym(".")
                    && let Tok::Ident(n) | Tok::Quoted(n) = self.peek_at(1).clone()
                {
                    {
                        self.bump();
                        self.bump();
                        return Ok(Expr::new(
                            ExprKind::Column {
                                qualifier: Some(w),
                                name: n,
                            },
                            pos,
                        ));
                    }
                }
                Ok(Expr::new(
                    ExprKind::Column {
                        qualifier: None,
                        name: w,
                    },
                    pos,
                ))
            }
            _ => Err(self.unexpected("an expression")),
        }
    }

    fn array_literal(&mut self, pos: usize) -> Result<Expr> {
        self.expect_sym("[")?;
        let mut items = Vec::new();
        if !self.eat_sym("]") {
            loop {
                // Nested rows may drop the ARRAY keyword: ARRAY[[1, 2], [3, 4]].
                if self.is_sym("[") {
                    let p = self.pos();
                    self.enter()?;
                    let e = self.array_literal(p);
                    self.leave();
                    items.push(e?);
                } else {
                    items.push(self.expr()?);
                }
                if !self.eat_sym(",") {
                    break;
                }
            }
            self.expect_sym("]")?;
        }
        Ok(Expr::new(ExprKind::Array(items), pos))
    }

    fn case(&mut self, pos: usize) -> Result<Expr> {
        let operand = if self.is_kw("WHEN") {
            None
        } else {
            Some(Box::new(self.expr()?))
        };
        let mut whens = Vec::new();
        while self.eat_kw("WHEN") {
            let c = self.expr()?;
            self.expect_kw("THEN")?;
            whens.push((c, self.expr()?));
        }
        if whens.is_empty() {
            return Err(self.unexpected("WHEN"));
        }
        let otherwise = if self.eat_kw("ELSE") {
            Some(Box::new(self.expr()?))
        } else {
            None
        };
        self.expect_kw("END")?;
        Ok(Expr::new(
            ExprKind::Case {
                operand,
                whens,
                otherwise,
            },
            pos,
        ))
    }
}

fn is_reserved(w: &str) -> bool {
    RESERVED.iter().any(|r| r.eq_ignore_ascii_case(w))
}

fn bin(op: BinOp, l: Expr, r: Expr, pos: usize) -> Expr {
    Expr::new(
        ExprKind::Binary {
            op,
            left: Box::new(l),
            right: Box::new(r),
        },
        pos,
    )
}

/// `url@version` -> (url, version). The last `@` wins, so `s3://user@host/x@v1` keeps
/// its user part; an `@` inside the path with nothing after it is not a version.
fn split_version(s: &str) -> (String, Option<String>) {
    match s.rsplit_once('@') {
        Some((u, v)) if !v.is_empty() && !v.contains('/') && !u.is_empty() => {
            (u.to_owned(), Some(v.to_owned()))
        }
        _ => (s.to_owned(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(q: &str) -> Query {
        parse(q).unwrap_or_else(|e| panic!("{q}: {e}"))
    }

    fn err(q: &str) -> String {
        parse(q).unwrap_err().to_string()
    }

    #[test]
    fn every_shared_case_query_parses_or_fails_as_expected() {
        for q in [
            "SELECT * WHERE id IN (3, 5, 7, 250)",
            "SELECT * WHERE id % 17 == 3 AND NOT id > 100 OR id == 199",
            "SELECT TOP 3 * WHERE id > 50",
            "SELECT * WHERE id IN ARRAY[1, 2]",
            "SELECT * WHERE id < 3;",
            "SELECT id, images[0:2, 1:3, 0] AS crop WHERE id < 2",
            "SELECT id, images[::2, 0, 0] AS st WHERE id == 9",
            "SELECT * WHERE images[-1, 0, 0] == 31",
            "SELECT * SAMPLE BY MAX_WEIGHT(label == 'cat': 1, label == 'dog': 0) LIMIT 30",
            "SELECT * WHERE id < 50 SAMPLE BY score REPLACE FALSE LIMIT 10 PERCENT",
            "(SELECT * WHERE id > 195) UNION (SELECT * WHERE id < 2) ORDER BY id DESC",
            "SELECT * FROM \"file:///x@v1\" WHERE score > 50",
            "SELECT * WHERE id < 20 GROUP BY label HAVING AMAX(score) > 9",
            "SELECT * WHERE id == 50 EXPAND BY 2 3",
            "SELECT id, d FROM (SELECT id, COSINE_SIMILARITY(embedding, ARRAY[0.1, -0.2]) AS d) ORDER BY d DESC LIMIT 3",
            "SELECT CASE WHEN id > 3 THEN 'a' ELSE 'b' END AS c",
            "EXPLAIN SELECT * WHERE id < 3",
        ] {
            ok(q);
        }
        assert!(err("SELECT * WHERE id < 100 LIMIT 10 PERCENT").contains("position 33"));
        assert!(err("SELECT * WHERE").contains("expecting an expression"));
        assert!(err("SELECT * WHERE (id < 3").contains("expecting ')'"));
    }

    #[test]
    fn precedence_and_slices() {
        let Query::Select(s) = ok("SELECT * WHERE a + b * c == d OR e") else {
            panic!()
        };
        let Some(Expr {
            kind:
                ExprKind::Binary {
                    op: BinOp::Or,
                    left,
                    ..
                },
            ..
        }) = s.filter
        else {
            panic!()
        };
        let ExprKind::Binary {
            op: BinOp::Eq,
            left: sum,
            ..
        } = left.kind
        else {
            panic!()
        };
        assert!(matches!(sum.kind, ExprKind::Binary { op: BinOp::Add, .. }));

        let Query::Select(s) = ok("SELECT x[1, ::2, :-1]") else {
            panic!()
        };
        let SelectItem::Expr { expr, .. } = &s.items[0] else {
            panic!()
        };
        let ExprKind::Index { items, .. } = &expr.kind else {
            panic!()
        };
        assert_eq!(items.len(), 3);
        assert!(matches!(
            &items[1],
            IndexItem::Slice {
                start: None,
                stop: None,
                step: Some(_)
            }
        ));
        assert!(matches!(
            &items[2],
            IndexItem::Slice {
                start: None,
                stop: Some(Expr {
                    kind: ExprKind::Lit(Lit::Int(-1)),
                    ..
                }),
                step: None
            }
        ));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let q = format!(
            "SELECT * WHERE {}1{}",
            "(".repeat(100_000),
            ")".repeat(100_000)
        );
        assert!(err(&q).contains("nests deeper"));
        let q = format!("SELECT * WHERE {}1", "- ".repeat(100_000));
        assert!(err(&q).contains("nests deeper"));
        let q = format!("SELECT * WHERE {}x", "NOT ".repeat(100_000));
        assert!(err(&q).contains("nests deeper"));
    }

    proptest::proptest! {
        /// Any soup of TQL tokens parses or fails with a position inside the text.
        #[test]
        fn token_soup_never_panics(words in proptest::collection::vec(proptest::sample::select(vec![
            "SELECT", "*", "WHERE", "FROM", "(", ")", "[", "]", ":", "::", ",", "-", "+", "==",
            "AND", "OR", "NOT", "IN", "ARRAY", "'s'", "\"q\"", "1", "2.5", "x", "GROUP", "BY",
            "ORDER", "LIMIT", "SAMPLE", "REPLACE", "PERCENT", "UNION", "CASE", "WHEN", "THEN",
            "END", "IS", "NULL", "LIKE", "BETWEEN", "f", "@", ";", "'", "\"",
        ]), 0..40)) {
            let text = words.join(" ");
            if let Err(Error::Query { pos: Some(p), .. }) = parse(&text) {
                proptest::prop_assert!(p <= text.chars().count());
            }
        }
    }

    #[test]
    fn versions_split_at_the_last_at() {
        assert_eq!(
            split_version("s3://b/p@dev"),
            ("s3://b/p".into(), Some("dev".into()))
        );
        assert_eq!(split_version("/data/x"), ("/data/x".into(), None));
        assert_eq!(split_version("s3://u@h/p"), ("s3://u@h/p".into(), None));
    }
}
