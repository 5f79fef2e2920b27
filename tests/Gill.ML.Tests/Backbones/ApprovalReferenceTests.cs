using System.Text.Json;

namespace Gill.ML.Tests.Backbones;

/// <summary>
/// Cross-checks the approval files (the checkpoint key lists our loaders expect, in the Hub layout) against the
/// state-dict key lists that transformers itself builds for the same full-size architectures (References/keys-*.json).
/// transformers' module layout differs from the Hub files only in documented ways, applied here.
/// </summary>
[TestClass]
public sealed class ApprovalReferenceTests
{
    private static Dictionary<string, string> Approved(string name)
    {
        var dir = Path.Combine(NotebooksRoot(), "tests", "Gill.ML.Tests", "Approvals");
        return File.ReadAllLines(Path.Combine(dir, name + ".approved.txt"))
            .Where(l => l.Trim().Length > 0)
            .Select(l => l.Trim().Split(' ', 2))
            .ToDictionary(p => p[0], p => p[1].Replace(" ", ""), StringComparer.Ordinal);
    }

    private static string NotebooksRoot() =>
        Notebooks.NotebookTests.RepoRoot() ?? throw new InvalidOperationException("Repository root not found.");

    private static Dictionary<string, string> Reference(string name)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "References", $"keys-{name}.json")));
        return doc.RootElement.EnumerateObject().ToDictionary(
            p => p.Name, p => "[" + string.Join(",", p.Value.EnumerateArray().Select(e => e.GetInt64())) + "]", StringComparer.Ordinal);
    }

    private static void AssertSame(Dictionary<string, string> expected, Dictionary<string, string> actual, string what)
    {
        var missing = expected.Keys.Except(actual.Keys).OrderBy(k => k).ToList();
        var extra = actual.Keys.Except(expected.Keys).OrderBy(k => k).ToList();
        var shapes = expected.Keys.Intersect(actual.Keys).Where(k => expected[k] != actual[k]).Select(k => $"{k}: {actual[k]} vs {expected[k]}").ToList();
        Assert.IsTrue(missing.Count == 0 && extra.Count == 0 && shapes.Count == 0,
            $"{what}: missing [{string.Join(", ", missing.Take(5))}], extra [{string.Join(", ", extra.Take(5))}], shapes [{string.Join(", ", shapes.Take(5))}]");
    }

    [TestMethod]
    public void ClipVitLargePatch14MatchesTransformers()
    {
        // The Hub checkpoint also stores the int64 position_ids buffers, which transformers 5 no longer persists.
        var approved = Approved("clip-vit-large-patch14");
        var reference = Reference("clip-vit-large-patch14");
        approved.Remove("text_model.embeddings.position_ids");
        approved.Remove("vision_model.embeddings.position_ids");
        AssertSame(reference, approved, "clip-vit-large-patch14");
    }
}
