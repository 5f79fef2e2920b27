using System.Text.RegularExpressions;
using Microsoft.Data.Analysis;

namespace Gill.ML.Evaluation;

/// <summary>Smoothing of zero n-gram precisions (sacrebleu's <c>smooth_method</c>).</summary>
public enum BleuSmoothing
{
    /// <summary>No smoothing: a zero precision makes the score 0.</summary>
    None,
    /// <summary>Zero counts replaced by <c>smooth_value</c> (default 0.1).</summary>
    Floor,
    /// <summary>k added to counts and totals for n ≥ 2 (default 1).</summary>
    AddK,
    /// <summary>NIST geometric sequence 1/2^k for the k-th zero precision (sacrebleu's default, corpus and sentence level).</summary>
    Exp,
}

/// <summary>Tokenisation before n-gram counting.</summary>
public enum BleuTokenizer
{
    /// <summary>mteval-v13a (sacrebleu's default).</summary>
    Mteval13a,
    /// <summary>Split on whitespace only.</summary>
    None,
}

/// <summary>Options of the BLEU evaluator; the defaults are sacrebleu's <c>corpus_bleu</c> defaults.</summary>
public sealed class BleuOptions : BootstrapOptions
{
    /// <summary>Tokeniser (13a).</summary>
    public BleuTokenizer Tokenizer { get; set; } = BleuTokenizer.Mteval13a;

    /// <summary>Smoothing of the corpus score (Exp; it only changes the result when some n-gram order has no match in the whole corpus).</summary>
    public BleuSmoothing Smoothing { get; set; } = BleuSmoothing.Exp;

    /// <summary>Value for <see cref="BleuSmoothing.Floor"/> (0.1) and <see cref="BleuSmoothing.AddK"/> (1) when null.</summary>
    public double? SmoothValue { get; set; }

    /// <summary>Lowercase hypotheses and references.</summary>
    public bool Lowercase { get; set; }

    /// <summary>Maximum n-gram order (4).</summary>
    public int MaxOrder { get; set; } = 4;

    /// <inheritdoc />
    public override void Validate()
    {
        base.Validate();
        if (MaxOrder < 1) throw new ArgumentOutOfRangeException(nameof(MaxOrder), MaxOrder, "MaxOrder must be at least 1.");
    }
}

/// <summary>
/// Corpus BLEU as sacrebleu computes it (13a tokenisation, clipped n-gram counts against all references, the closest
/// reference length, brevity penalty, exp smoothing). <see cref="Score"/> is on sacrebleu's 0–100 scale,
/// <see cref="Value"/> on the paper's 0–1 scale. Per-example scores are sentence BLEU (exp smoothing, effective order,
/// as <c>sentence_bleu</c>).
/// </summary>
public sealed class BleuMetrics
{
    internal BleuMetrics(double score, double[] precisions, double bp, long sysLen, long refLen, long[] counts, long[] totals, double[] sentenceScores, ConfidenceInterval? ci)
    {
        Score = score;
        Precisions = precisions.ToArray();
        BrevityPenalty = bp;
        HypothesisLength = sysLen;
        ReferenceLength = refLen;
        Counts = counts.ToArray();
        Totals = totals.ToArray();
        SentenceScores = sentenceScores.ToArray();
        N = sentenceScores.Length;
        ConfidenceInterval = ci;
    }

    /// <summary>Corpus BLEU on the 0–100 scale.</summary>
    public double Score { get; }

    /// <summary>Corpus BLEU on the 0–1 scale (<see cref="Score"/> / 100).</summary>
    public double Value => Score / 100;

    /// <summary>Modified n-gram precisions (0–100) for n = 1 … MaxOrder.</summary>
    public IReadOnlyList<double> Precisions { get; }

    /// <summary>Brevity penalty.</summary>
    public double BrevityPenalty { get; }

    /// <summary>Total hypothesis tokens.</summary>
    public long HypothesisLength { get; }

    /// <summary>Total closest-reference tokens.</summary>
    public long ReferenceLength { get; }

    /// <summary>Clipped matching n-grams per order.</summary>
    public IReadOnlyList<long> Counts { get; }

    /// <summary>Hypothesis n-grams per order.</summary>
    public IReadOnlyList<long> Totals { get; }

    /// <summary>Number of segments.</summary>
    public int N { get; }

    /// <summary>Sentence BLEU (0–100) of each segment.</summary>
    public IReadOnlyList<double> SentenceScores { get; }

    /// <summary>Bootstrap interval of <see cref="Score"/> (segments resampled, corpus BLEU recomputed), or null when off.</summary>
    public ConfidenceInterval? ConfidenceInterval { get; }

    /// <summary>Per-segment sentence BLEU.</summary>
    public DataFrame ToDataFrame() => new(
        new Int32DataFrameColumn("Index", Enumerable.Range(0, N)),
        new DoubleDataFrameColumn("SentenceBLEU", SentenceScores));

    /// <summary>One-row summary (value on the 0–100 scale).</summary>
    public DataFrame ToSummaryDataFrame() => MetricFrames.Summary("BLEU", Score, N, null, ConfidenceInterval);

    /// <inheritdoc />
    public override string ToString() =>
        $"BLEU = {Score:F2} {string.Join("/", Precisions.Select(p => p.ToString("F1", System.Globalization.CultureInfo.InvariantCulture)))} (BP = {BrevityPenalty:F3} ratio = {(double)HypothesisLength / ReferenceLength:F3} hyp_len = {HypothesisLength} ref_len = {ReferenceLength})";
}

internal static class BleuEvaluator
{
    private static readonly (Regex Re, string Replacement)[] PostRules =
    {
        (new Regex(@"([\{-\~\[-\` -\&\(-\+\:-\@\/])", RegexOptions.CultureInvariant), " $1 "),
        (new Regex(@"([^0-9])([\.,])", RegexOptions.CultureInvariant), "$1 $2 "),
        (new Regex(@"([\.,])([^0-9])", RegexOptions.CultureInvariant), " $1 $2"),
        (new Regex(@"([0-9])(-)", RegexOptions.CultureInvariant), "$1 $2 "),
    };

    /// <summary>sacrebleu's 13a tokeniser.</summary>
    public static string Tokenize13a(string line)
    {
        line = line.Replace("<skipped>", "").Replace("-\n", "").Replace("\n", " ");
        if (line.Contains('&'))
            line = line.Replace("&quot;", "\"").Replace("&amp;", "&").Replace("&lt;", "<").Replace("&gt;", ">");
        line = " " + line + " ";
        foreach (var (re, rep) in PostRules) line = re.Replace(line, rep);
        return string.Join(' ', SplitWhitespace(line));
    }

    private static string[] SplitWhitespace(string s) => s.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);

    internal sealed record SegmentStats(long[] Correct, long[] Total, long SysLen, long RefLen);

    private static Dictionary<string, int> NGrams(string[] tokens, int maxOrder)
    {
        var d = new Dictionary<string, int>(StringComparer.Ordinal);
        for (int n = 1; n <= maxOrder; n++)
            for (int i = 0; i + n <= tokens.Length; i++)
            {
                var g = string.Join(' ', tokens, i, n);
                d[g] = d.TryGetValue(g, out var c) ? c + 1 : 1;
            }
        return d;
    }

    public static SegmentStats Segment(string hypothesis, IReadOnlyList<string> references, BleuOptions o, int index)
    {
        var refs = references.Where(r => !string.IsNullOrEmpty(r)).ToList();
        if (refs.Count == 0) throw new ArgumentException($"Segment {index} has no non-empty reference.", nameof(references));
        string Prep(string s)
        {
            s = s.TrimEnd();
            if (o.Lowercase) s = s.ToLowerInvariant();
            return o.Tokenizer == BleuTokenizer.Mteval13a ? Tokenize13a(s) : s;
        }
        var hyp = SplitWhitespace(Prep(hypothesis ?? throw new ArgumentNullException(nameof(hypothesis), $"Hypothesis {index} is null.")));
        var refNgrams = new Dictionary<string, int>(StringComparer.Ordinal);
        int? closestDiff = null;
        int closestLen = 0;
        foreach (var r in refs)
        {
            var toks = SplitWhitespace(Prep(r));
            int diff = Math.Abs(hyp.Length - toks.Length);
            if (closestDiff is null || diff < closestDiff) { closestDiff = diff; closestLen = toks.Length; }
            else if (diff == closestDiff && toks.Length < closestLen) closestLen = toks.Length;
            foreach (var (g, c) in NGrams(toks, o.MaxOrder))
                refNgrams[g] = Math.Max(refNgrams.TryGetValue(g, out var e) ? e : 0, c);
        }
        var correct = new long[o.MaxOrder];
        var total = new long[o.MaxOrder];
        foreach (var (g, c) in NGrams(hyp, o.MaxOrder))
        {
            int n = g.Count(ch => ch == ' ') + 1;
            correct[n - 1] += Math.Min(c, refNgrams.TryGetValue(g, out var rc) ? rc : 0);
            total[n - 1] += c;
        }
        return new SegmentStats(correct, total, hyp.Length, closestLen);
    }

    /// <summary>sacrebleu's <c>compute_bleu</c>: the score (0–100), the precisions and the brevity penalty.</summary>
    public static (double Score, double[] Precisions, double Bp) Compute(long[] correctIn, long[] totalIn, long sysLen, long refLen, BleuSmoothing smoothing, double? smoothValue, bool effectiveOrder)
    {
        int order = correctIn.Length;
        var correct = correctIn.Select(c => (double)c).ToArray();
        var total = totalIn.Select(c => (double)c).ToArray();
        double sv = smoothValue ?? smoothing switch { BleuSmoothing.Floor => 0.1, BleuSmoothing.AddK => 1, _ => 0 };
        var precisions = new double[order];
        double smoothMteval = 1;
        int eff = order;
        if (sysLen == 0) return (0, precisions, 0);
        for (int n = 1; n <= order; n++)
        {
            if (smoothing == BleuSmoothing.AddK && n > 1)
            {
                correct[n - 1] += sv;
                total[n - 1] += sv;
            }
            if (total[n - 1] == 0) break;
            if (effectiveOrder) eff = n;
            if (correct[n - 1] == 0)
            {
                if (smoothing == BleuSmoothing.Exp)
                {
                    smoothMteval *= 2;
                    precisions[n - 1] = 100.0 / (smoothMteval * total[n - 1]);
                }
                else if (smoothing == BleuSmoothing.Floor)
                {
                    precisions[n - 1] = 100.0 * sv / total[n - 1];
                }
            }
            else precisions[n - 1] = 100.0 * correct[n - 1] / total[n - 1];
        }
        double bp = sysLen < refLen ? Math.Exp(1 - (double)refLen / sysLen) : 1.0;
        double logSum = 0;
        for (int i = 0; i < eff; i++) logSum += precisions[i] == 0 ? -9999999999 : Math.Log(precisions[i]);
        return (bp * Math.Exp(logSum / eff), precisions, bp);
    }

    public static BleuMetrics Evaluate(IReadOnlyList<string> hypotheses, IReadOnlyList<IReadOnlyList<string>> references, BleuOptions options)
    {
        ArgumentNullException.ThrowIfNull(hypotheses);
        ArgumentNullException.ThrowIfNull(references);
        options.Validate();
        if (hypotheses.Count == 0) throw new ArgumentException("BLEU needs at least one hypothesis; the list is empty.", nameof(hypotheses));
        if (references.Count != hypotheses.Count)
            throw new ArgumentException($"There are {hypotheses.Count} hypotheses but references for {references.Count} segments.", nameof(references));
        var segs = hypotheses.Select((h, i) => Segment(h, references[i] ?? throw new ArgumentNullException(nameof(references), $"References of segment {i} are null."), options, i)).ToArray();
        (double, double[], double, long, long, long[], long[]) Corpus(IEnumerable<int> idx)
        {
            var c = new long[options.MaxOrder];
            var t = new long[options.MaxOrder];
            long sl = 0, rl = 0;
            foreach (var i in idx)
            {
                for (int n = 0; n < c.Length; n++) { c[n] += segs[i].Correct[n]; t[n] += segs[i].Total[n]; }
                sl += segs[i].SysLen;
                rl += segs[i].RefLen;
            }
            var (s, p, bp) = Compute(c, t, sl, rl, options.Smoothing, options.SmoothValue, effectiveOrder: false);
            return (s, p, bp, sl, rl, c, t);
        }
        var (score, prec, bpc, sys, refl, counts, totals) = Corpus(Enumerable.Range(0, segs.Length));
        var sentence = segs.Select(s => Compute(s.Correct, s.Total, s.SysLen, s.RefLen, BleuSmoothing.Exp, null, effectiveOrder: true).Score).ToArray();
        var ci = Bootstrap.Interval(segs.Length, idx => Corpus(idx).Item1, options);
        return new BleuMetrics(score, prec, bpc, sys, refl, counts, totals, sentence, ci);
    }
}
