using Microsoft.DotNet.Interactive;
using Microsoft.DotNet.Interactive.Commands;
using Microsoft.DotNet.Interactive.CSharp;
using Microsoft.DotNet.Interactive.Documents;
using Microsoft.DotNet.Interactive.Documents.Jupyter;
using Microsoft.DotNet.Interactive.Events;

namespace Gill.ML.Tests.Notebooks;

/// <summary>
/// Executes every C# cell of every notebooks/*.ipynb in-process with a C# kernel, against this test build's assemblies.
/// A notebook's setup cell (the one containing <c>// gill:setup</c>) references the CLI's build output for people using
/// the notebook; here it is replaced by references to the assemblies of this test run.
/// </summary>
[TestClass]
[TestCategory("Notebooks")]
public sealed class NotebookTests
{
    internal const string SetupMarker = "// gill:setup";

    private static readonly string[] ReferencedAssemblies =
    {
        "Gill.ML.dll", "Gill.ML.Evaluation.dll", "TorchSharp.dll", "Microsoft.ML.dll", "Microsoft.ML.Core.dll",
        "Microsoft.ML.Data.dll", "Microsoft.ML.DataView.dll", "Microsoft.ML.ImageAnalytics.dll", "Microsoft.Data.Analysis.dll",
        "Microsoft.ML.Tokenizers.dll", "SkiaSharp.dll", "Microsoft.ML.OnnxRuntime.dll",
        // display(...) and HTML(...) of Polyglot Notebooks (Microsoft.DotNet.Interactive.Kernel's static helpers).
        "Microsoft.DotNet.Interactive.dll", "Microsoft.DotNet.Interactive.Formatting.dll", "Microsoft.AspNetCore.Html.Abstractions.dll",
    };

    public static IEnumerable<object[]> Notebooks()
    {
        var dir = RepoRoot() is { } root ? Path.Combine(root, "notebooks") : null;
        if (dir is null || !Directory.Exists(dir)) yield break;
        foreach (var nb in Directory.GetFiles(dir, "*.ipynb").OrderBy(p => p, StringComparer.Ordinal))
            yield return new object[] { Path.GetFileName(nb) };
    }

    internal static string? RepoRoot()
    {
        var d = new DirectoryInfo(AppContext.BaseDirectory);
        while (d is not null && !File.Exists(Path.Combine(d.FullName, "Gill.ML.sln"))) d = d.Parent;
        return d?.FullName;
    }

    [TestMethod]
    public void EveryNotebookIsFound()
    {
        var names = Notebooks().Select(o => (string)o[0]).ToList();
        CollectionAssert.Contains(names, "00-backbones.ipynb");
    }

    /// <summary>
    /// A cell containing <c>// gill:expect-html TEXT</c> must produce a text/html output (displayed or returned) that
    /// contains TEXT: it checks that rich outputs (the GILL formatters, charts) reach the notebook.
    /// </summary>
    internal const string ExpectHtmlMarker = "// gill:expect-html ";

    /// <summary><c>#r</c> lines for the assemblies of this test build that notebooks use.</summary>
    internal static string ReferenceCode() => string.Join("\n", ReferencedAssemblies
        .Select(a => Path.Combine(AppContext.BaseDirectory, a)).Where(File.Exists).Select(p => $"#r \"{p}\""));

    /// <summary>Errors reported by a submission: failed commands, error outputs and compiler errors.</summary>
    internal static List<string> Failures(IEnumerable<KernelEvent> events)
    {
        var list = events.ToList();
        return list.OfType<CommandFailed>().Select(f => f.Message + (f.Exception is null ? "" : "\n" + f.Exception))
            .Concat(list.OfType<ErrorProduced>().Select(e => e.Message))
            .Concat(list.OfType<DiagnosticsProduced>().SelectMany(d => d.Diagnostics)
                .Where(d => d.Severity == Microsoft.CodeAnalysis.DiagnosticSeverity.Error).Select(d => d.ToString()))
            .ToList();
    }

    /// <summary>Formatted values a submission displayed or returned, as (MIME type, value).</summary>
    internal static List<(string MimeType, string Value)> Outputs(IEnumerable<KernelEvent> events) =>
        events.OfType<DisplayEvent>().SelectMany(e => e.FormattedValues).Select(f => (f.MimeType, f.Value)).ToList();

    [TestMethod]
    [DynamicData(nameof(Notebooks))]
    public async Task NotebookRunsWithoutErrors(string notebook)
    {
        var root = RepoRoot() ?? throw new InvalidOperationException("Repository root (Gill.ML.sln) not found.");
        var path = Path.Combine(root, "notebooks", notebook);
        var doc = Notebook.Parse(await File.ReadAllTextAsync(path), new KernelInfoCollection { new("csharp", "C#", aliases: new[] { "c#", "C#" }) });
        var cells = doc.Elements.Where(e => e.KernelName is "csharp" or "c#" or "C#").ToList();
        Assert.IsTrue(cells.Count > 0, $"{notebook} has no C# cells.");
        Assert.IsTrue(cells.Any(c => c.Contents.Contains(SetupMarker)), $"{notebook} has no setup cell ('{SetupMarker}').");

        var previousDir = Environment.CurrentDirectory;
        Environment.CurrentDirectory = Path.Combine(root, "notebooks");
        var total = System.Diagnostics.Stopwatch.StartNew();
        try
        {
            using var kernel = new CSharpKernel();
            var refs = ReferenceCode();
            // Set GILL_NOTEBOOK_OUTPUTS to a folder to keep every text/html output (charts, GILL results) for inspection.
            var outputDir = Environment.GetEnvironmentVariable("GILL_NOTEBOOK_OUTPUTS") is { Length: > 0 } d ? Directory.CreateDirectory(d).FullName : null;
            for (int i = 0; i < cells.Count; i++)
            {
                var code = cells[i].Contents.Contains(SetupMarker) ? refs : cells[i].Contents;
                var sw = System.Diagnostics.Stopwatch.StartNew();
                var result = await kernel.SendAsync(new SubmitCode(code));
                var failures = Failures(result.Events);
                if (failures.Count > 0)
                    Assert.Fail($"{notebook}, C# cell {i + 1}:\n{cells[i].Contents}\n--- failed with:\n{string.Join("\n", failures)}");
                var outputs = Outputs(result.Events);
                Console.WriteLine($"{notebook} cell {i + 1}: {sw.Elapsed.TotalSeconds:F1} s, outputs: {string.Join(", ", outputs.GroupBy(o => o.MimeType).Select(g => $"{g.Count()} {g.Key}"))}");
                if (outputDir is not null)
                    foreach (var (html, k) in outputs.Where(o => o.MimeType == "text/html").Select((o, k) => (o.Value, k)))
                        File.WriteAllText(Path.Combine(outputDir, $"{Path.GetFileNameWithoutExtension(notebook)}-cell{i + 1:D2}-{k + 1}.html"), html);
                foreach (var text in result.Events.OfType<StandardOutputValueProduced>().SelectMany(e => e.FormattedValues).Select(f => f.Value))
                    Console.Write("    " + (text.Length > 400 ? text[..400] + "…\n" : text));
                foreach (var line in cells[i].Contents.Split('\n').Select(l => l.Trim()).Where(l => l.StartsWith(ExpectHtmlMarker, StringComparison.Ordinal)))
                {
                    var expected = line[ExpectHtmlMarker.Length..].Trim();
                    Assert.IsTrue(outputs.Any(o => o.MimeType == "text/html" && o.Value.Contains(expected, StringComparison.Ordinal)),
                        $"{notebook}, C# cell {i + 1}: no text/html output contains '{expected}' (outputs: {string.Join(", ", outputs.Select(o => o.MimeType))}).");
                }
            }
            Console.WriteLine($"{notebook}: {total.Elapsed.TotalSeconds:F1} s");
        }
        finally
        {
            Environment.CurrentDirectory = previousDir;
        }
    }
}
