using System.Text.Json;
using Gill.ML.Evaluation;
using Microsoft.ML;

namespace Gill.ML.Tests.Evaluation;

/// <summary>Corpus BLEU against sacrebleu 2.6 itself (References/sacrebleu.json, made by tools/reference/dump_references.py).</summary>
[TestClass]
public sealed class BleuSacrebleuParityTests
{
    [TestMethod]
    public void CorpusBleuMatchesSacrebleu()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "References", "sacrebleu.json")));
        var root = doc.RootElement;
        var hyps = root.GetProperty("hyps").EnumerateArray().Select(e => e.GetString()!).ToList();
        var refs = root.GetProperty("refs").EnumerateArray().Select(e => e.GetString()!).ToList();
        var bleu = new MLContext(seed: 1).Gill().Evaluation.Bleu(hyps, refs);
        Assert.AreEqual(root.GetProperty("score").GetDouble(), bleu.Score, 1e-9, "BLEU score");
        Assert.AreEqual(root.GetProperty("bp").GetDouble(), bleu.BrevityPenalty, 1e-9, "brevity penalty");
        var precisions = root.GetProperty("precisions").EnumerateArray().Select(e => e.GetDouble()).ToArray();
        for (int n = 0; n < 4; n++) Assert.AreEqual(precisions[n], bleu.Precisions[n], 1e-9, $"{n + 1}-gram precision");
    }
}
