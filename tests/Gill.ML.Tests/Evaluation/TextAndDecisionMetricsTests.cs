using Gill.ML.Evaluation;
using Microsoft.ML;
using Microsoft.ML.Data;

namespace Gill.ML.Tests.Evaluation;

[TestClass]
public class BleuTests
{
    // Two segments, one reference each, 13a tokenisation leaves them unchanged.
    //   hyp "the cat sat on the mat" / ref "the cat is on the mat":
    //     1-grams 6, matched 5 (the×2, cat, on, mat); 2-grams 5, matched 3 (the cat, on the, the mat);
    //     3-grams 4, matched 1 (on the mat); 4-grams 3, matched 0.
    //   hyp "a dog runs" / ref "a dog runs fast": 1-grams 3/3, 2-grams 2/2, 3-grams 1/1, no 4-grams.
    // Corpus: correct [8, 5, 2, 0], total [9, 7, 5, 3], hyp length 9, ref length 10.
    // p1 = 800/9, p2 = 500/7, p3 = 40, p4 = 100 / (2·3) (exp smoothing: the first zero precision becomes 1/(2·total)).
    // BP = exp(1 − 10/9) = 0.894839; geometric mean = exp(Σ ln pₙ / 4) = 45.358329; BLEU = 40.588416.
    private static readonly string[] Hyps = { "the cat sat on the mat", "a dog runs" };
    private static readonly string[] Refs = { "the cat is on the mat", "a dog runs fast" };

    [TestMethod]
    public void CorpusBleuMatchesTheHandComputedValue()
    {
        var m = new MLContext(1).Gill().Evaluation.Bleu(Hyps, Refs);
        Assert.AreEqual(40.58841603380763, m.Score, 1e-9);
        Assert.AreEqual(0.4058841603380763, m.Value, 1e-11);
        CollectionAssert.AreEqual(new long[] { 8, 5, 2, 0 }, m.Counts.ToArray());
        CollectionAssert.AreEqual(new long[] { 9, 7, 5, 3 }, m.Totals.ToArray());
        Assert.AreEqual(9, m.HypothesisLength);
        Assert.AreEqual(10, m.ReferenceLength);
        Assert.AreEqual(Math.Exp(1 - 10.0 / 9), m.BrevityPenalty, 1e-12);
        Assert.AreEqual(100.0 / 6, m.Precisions[3], 1e-12);
        // Sentence BLEU (exp smoothing, effective order): segment 1 = exp(mean ln [500/6, 60, 25, 100/6]) = 37.991784;
        // segment 2 has no 4-grams, so the order is 3, precisions 100, BP = exp(1 − 4/3): 71.653131.
        Assert.AreEqual(37.99178428257963, m.SentenceScores[0], 1e-9);
        Assert.AreEqual(71.65313105737893, m.SentenceScores[1], 1e-9);
    }

    [TestMethod]
    public void WithoutSmoothingAZeroPrecisionGivesZero()
    {
        var m = new MLContext(1).Gill().Evaluation.Bleu(Hyps, Refs, new BleuOptions { Smoothing = BleuSmoothing.None });
        Assert.AreEqual(0, m.Score, 1e-12);
    }

    [TestMethod]
    public void ClosestReferenceLengthAndClippingUseAllReferences()
    {
        // "the the the" vs refs "the cat" and "the the dog x": 1-gram clip = max count over references = 2.
        // Closest reference length to 3: |3−2| = 1 and |3−4| = 1 tie → the shorter, 2.
        var refs = new IReadOnlyList<string>[] { new[] { "the cat", "the the dog x" } };
        var m = new MLContext(1).Gill().Evaluation.Bleu(new[] { "the the the" }, refs);
        Assert.AreEqual(2, m.Counts[0]);
        Assert.AreEqual(2, m.ReferenceLength);
        Assert.AreEqual(1.0, m.BrevityPenalty);
    }

    [TestMethod]
    public void Tokenizer13aSplitsPunctuationLikeSacrebleu()
    {
        // Expected strings from sacrebleu's 13a rules applied by hand.
        Assert.AreEqual("Hello , world ! It's 3.5 - 4 km .", BleuEvaluator.Tokenize13a("Hello, world! It's 3.5-4 km."));
        Assert.AreEqual("A \" quoted \" ( test ) costs $ 1,000.50 ; ok ?", BleuEvaluator.Tokenize13a("A \"quoted\" (test) costs $1,000.50; ok?"));
        Assert.AreEqual("x & y 12 - 3 e . g . end .", BleuEvaluator.Tokenize13a("x&amp;y 12-3 e.g. end."));
    }

    [TestMethod]
    public void DataViewColumnsAndErrors()
    {
        var ml = new MLContext(1);
        var data = ml.Data.LoadFromEnumerable(Hyps.Select((h, i) => new Caption { Hypothesis = h, Reference = Refs[i] }));
        var m = ml.Gill().Evaluation.Bleu(data, nameof(Caption.Hypothesis), nameof(Caption.Reference));
        Assert.AreEqual(40.58841603380763, m.Score, 1e-9);
        Assert.AreEqual(2L, m.ToDataFrame().Rows.Count);
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => ml.Gill().Evaluation.Bleu(Hyps, Refs.Take(1).ToArray())).Message, "2 hypotheses but references for 1");
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentOutOfRangeException>(() => ml.Gill().Evaluation.Bleu(data, "Missing", nameof(Caption.Reference))).Message, "'Missing' is not in the data view");
    }

    private sealed class Caption
    {
        public string Hypothesis { get; set; } = "";
        public string Reference { get; set; } = "";
    }
}

[TestClass]
public class ClassificationMetricsTests
{
    // labels [0,0,0,0,1,1], predictions [0,0,1,1,1,0]
    // class 0: TP 2, FN 2, FP 1 → P 2/3, R 1/2, F1 = 2·(2/3)(1/2)/(7/6) = 4/7
    // class 1: TP 1, FN 1, FP 2 → P 1/3, R 1/2, F1 = 2·(1/3)(1/2)/(5/6) = 2/5
    // macro F1 = (4/7 + 2/5)/2 = 17/35; macro P = macro R = 1/2; accuracy 3/6.
    private static readonly int[] Labels = { 0, 0, 0, 0, 1, 1 };
    private static readonly int[] Predictions = { 0, 0, 1, 1, 1, 0 };

    [TestMethod]
    public void MacroAndPerClassScoresMatchHandValues()
    {
        var m = new MLContext(1).Gill().Evaluation.Classification(Labels, Predictions, new[] { "gen", "ret" });
        Assert.AreEqual(17.0 / 35, m.MacroF1, 1e-12);
        Assert.AreEqual(m.MacroF1, m.Value);
        Assert.AreEqual(0.5, m.MacroPrecision, 1e-12);
        Assert.AreEqual(0.5, m.MacroRecall, 1e-12);
        Assert.AreEqual(0.5, m.Accuracy, 1e-12);
        Assert.AreEqual(4.0 / 7, m.PerClass[0].F1, 1e-12);
        Assert.AreEqual(2.0 / 3, m.PerClass[0].Precision, 1e-12);
        Assert.AreEqual("ret", m.PerClass[1].Name);
        Assert.AreEqual(2, m.PerClass[1].Support);
        Assert.AreEqual(2, m.Confusion(0, 1));
        Assert.IsNotNull(m.ConfidenceInterval);
        Assert.AreEqual(2L, m.ToDataFrame().Rows.Count);
        Assert.AreEqual(4L, m.ToSummaryDataFrame().Rows.Count);
    }

    [TestMethod]
    public void NeverPredictedClassHasZeroPrecision()
    {
        // Always "generate" (class 0): class 1 precision 0 (zero_division = 0), F1 0.
        var m = new MLContext(1).Gill().Evaluation.Classification(Labels, new int[6]);
        Assert.AreEqual(0, m.PerClass[1].Precision);
        Assert.AreEqual(0, m.PerClass[1].F1);
        Assert.AreEqual((2 * (4.0 / 6) / (4.0 / 6 + 1)) / 2, m.MacroF1, 1e-12);
    }

    [TestMethod]
    public void BooleanDataViewColumns()
    {
        var ml = new MLContext(1);
        var data = ml.Data.LoadFromEnumerable(Labels.Select((l, i) => new Row { Label = l == 1, PredictedLabel = Predictions[i] == 1 }));
        var m = ml.Gill().Evaluation.Classification(data);
        Assert.AreEqual(17.0 / 35, m.MacroF1, 1e-12);
        StringAssert.Contains(Assert.ThrowsExactly<ArgumentException>(() => ml.Gill().Evaluation.Classification(Labels, Predictions.Take(5).ToArray())).Message, "6 labels but 5 predictions");
    }

    private sealed class Row
    {
        public bool Label { get; set; }
        public bool PredictedLabel { get; set; }
    }
}
