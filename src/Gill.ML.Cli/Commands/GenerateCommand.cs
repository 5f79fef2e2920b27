using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Gill.ML.Inference;
using Spectre.Console;

namespace Gill.ML.Cli.Commands;

/// <summary>Options shared by <c>gill generate</c> and <c>gill chat</c>.</summary>
internal sealed class GillInferenceCliOptions
{
    public Option<string> Model { get; } = new("--model", "-m") { Description = "GILL model folder (with gill-model.json)", Required = true };
    public Option<int> MaxTokens { get; } = new("--max-tokens") { Description = "Maximum sampled tokens", DefaultValueFactory = _ => 32 };
    public Option<double> Temperature { get; } = new("--temperature") { Description = "0 = greedy", DefaultValueFactory = _ => 0.0 };
    public Option<double> TopP { get; } = new("--top-p") { Description = "Nucleus mass when sampling", DefaultValueFactory = _ => 1.0 };
    public Option<long?> Seed { get; } = new("--seed") { Description = "Sampling and image seed" };
    public Option<double> Scale { get; } = new("--img-scale") { Description = "[IMG0] logit scale factor (>1 favours images; 1e5 forces one)", DefaultValueFactory = _ => 1.3 };
    public Option<int> MinTokens { get; } = new("--min-tokens") { Description = "Tokens before an image may start", DefaultValueFactory = _ => 0 };
    public Option<string> Decision { get; } = new("--decision") { Description = "auto | retrieve | generate", DefaultValueFactory = _ => "auto" };
    public Option<double> Threshold { get; } = new("--retrieval-threshold") { Description = "Without a classifier: retrieve when the best score reaches this", DefaultValueFactory = _ => 0.5 };
    public Option<int> Steps { get; } = new("--steps") { Description = "Image generator steps", DefaultValueFactory = _ => 50 };
    public Option<double> Guidance { get; } = new("--guidance") { Description = "Classifier-free guidance scale", DefaultValueFactory = _ => 7.5 };
    public Option<bool> FirstSentence { get; } = new("--first-sentence") { Description = "Cut text before an image at its first sentence (the original's behaviour)" };
    public Option<int> Context { get; } = new("--context-examples") { Description = "Retrieval-augmented in-context examples from the model's memory", DefaultValueFactory = _ => 0 };

    public void AddTo(Command command)
    {
        foreach (var o in new Option[] { Model, MaxTokens, Temperature, TopP, Seed, Scale, MinTokens, Decision, Threshold, Steps, Guidance, FirstSentence, Context })
            command.Options.Add(o);
    }

    public GillGenerationOptions Build(ParseResult parse)
    {
        double temperature = parse.GetValue(Temperature);
        var seed = parse.GetValue(Seed);
        var o = new GillGenerationOptions
        {
            MaxNewTokens = parse.GetValue(MaxTokens),
            Temperature = temperature,
            TopP = temperature == 0 ? 1.0 : parse.GetValue(TopP),
            Seed = seed,
            ImageTokenScaleFactor = parse.GetValue(Scale),
            MinTokensBeforeImage = parse.GetValue(MinTokens),
            DecisionMode = parse.GetValue(Decision)!.ToLowerInvariant() switch
            {
                "auto" => GillDecisionMode.Auto,
                "retrieve" => GillDecisionMode.AlwaysRetrieve,
                "generate" => GillDecisionMode.AlwaysGenerate,
                var d => throw new ArgumentException($"--decision must be auto, retrieve or generate, got '{d}'."),
            },
            RetrievalScoreThreshold = parse.GetValue(Threshold),
            TextTruncation = parse.GetValue(FirstSentence) ? GillTextTruncation.FirstSentence : GillTextTruncation.None,
            ContextExamples = parse.GetValue(Context),
            ContextOverflow = GillContextOverflow.TruncateLeft,
            ImageGeneration = new Generation.ImageGenerationOptions { Seed = seed ?? 1337, Steps = parse.GetValue(Steps), GuidanceScale = parse.GetValue(Guidance) },
        };
        o.Validate();
        return o;
    }

    public static GillModel Load(string folder)
    {
        GillModel? model = null;
        AnsiConsole.Status().Start($"Loading {folder}…", _ => model = GillModel.Load(folder));
        return model!;
    }
}

/// <summary><c>gill generate --model DIR --prompt TEXT [--image PATH]… --out DIR</c>.</summary>
internal sealed class GenerateCommandProvider : ICommandProvider
{
    private static readonly Regex ImageMarker = new(@"<image:([^>]+)>", RegexOptions.Compiled);

    public Command Build()
    {
        var common = new GillInferenceCliOptions();
        var prompt = new Option<string>("--prompt", "-p") { Description = "Prompt text; '<image:PATH>' markers place images inside it", Required = true };
        var images = new Option<string[]>("--image", "-i") { Description = "Image placed before the prompt text (repeatable, in order)", AllowMultipleArgumentsPerToken = false };
        var output = new Option<string>("--out", "-o") { Description = "Output folder: result.json and image files", Required = true };
        var cmd = new Command("generate", "Run a GILL model on an interleaved prompt: text out, plus retrieved or generated images");
        common.AddTo(cmd);
        cmd.Options.Add(prompt);
        cmd.Options.Add(images);
        cmd.Options.Add(output);
        cmd.SetAction(parse =>
        {
            GillGenerationOptions options;
            GillPrompt gillPrompt;
            try
            {
                options = common.Build(parse);
                gillPrompt = ParsePrompt(parse.GetValue(images) ?? Array.Empty<string>(), parse.GetValue(prompt)!);
            }
            catch (ArgumentException e)
            {
                AnsiConsole.MarkupLineInterpolated($"[red]Invalid options:[/] {e.Message}");
                return 2;
            }
            try
            {
                using var model = GillInferenceCliOptions.Load(parse.GetValue(common.Model)!);
                using var result = model.Generate(gillPrompt, options);
                var json = WriteResult(result, parse.GetValue(output)!, gillPrompt);
                AnsiConsole.WriteLine(result.Text);
                foreach (var g in result.ImageGroups)
                    AnsiConsole.MarkupLineInterpolated($"[grey][[IMG]] group {g.GroupIndex}: {g.Decision} (p_ret {g.RetrieveProbability:F3}, source {g.Source})[/]");
                AnsiConsole.MarkupLineInterpolated($"[green]Wrote[/] {json}");
                return 0;
            }
            catch (Exception e) when (e is IOException or InvalidDataException or ArgumentException or InvalidOperationException)
            {
                AnsiConsole.MarkupLineInterpolated($"[red]{e.Message}[/]");
                return 1;
            }
        });
        return cmd;
    }

    /// <summary>Images first, then the text split at '&lt;image:PATH&gt;' markers.</summary>
    internal static GillPrompt ParsePrompt(IReadOnlyList<string> images, string text)
    {
        var parts = new List<GillPromptPart>();
        foreach (var i in images) parts.Add(GillImageInput.FromFile(i));
        int at = 0;
        foreach (Match m in ImageMarker.Matches(text))
        {
            if (m.Index > at) parts.Add(new GillTextInput(text[at..m.Index]));
            parts.Add(GillImageInput.FromFile(m.Groups[1].Value));
            at = m.Index + m.Length;
        }
        if (at < text.Length) parts.Add(new GillTextInput(text[at..]));
        return new GillPrompt(parts);
    }

    /// <summary>Writes result.json and the generated images into <paramref name="folder"/>; returns the JSON path.</summary>
    internal static string WriteResult(GillGenerationResult result, string folder, GillPrompt prompt)
    {
        Directory.CreateDirectory(folder);
        var parts = new JsonArray();
        foreach (var p in result.Parts)
        {
            switch (p)
            {
                case GillTextOutput t:
                    parts.Add(new JsonObject { ["type"] = "text", ["text"] = t.Text });
                    break;
                case GillRetrievedImageOutput r:
                    parts.Add(new JsonObject { ["type"] = "retrieved_image", ["group"] = r.GroupIndex, ["rank"] = r.Rank, ["gallery_index"] = r.GalleryIndex, ["id"] = r.Id, ["score"] = r.Score });
                    break;
                case GillGeneratedImageOutput g:
                    string file = $"image-{g.GroupIndex}.png";
                    g.SavePng(Path.Combine(folder, file));
                    parts.Add(new JsonObject { ["type"] = "generated_image", ["group"] = g.GroupIndex, ["file"] = file, ["seed"] = g.Seed });
                    break;
            }
        }
        var groups = new JsonArray();
        foreach (var g in result.ImageGroups)
            groups.Add(new JsonObject
            {
                ["group"] = g.GroupIndex, ["token_position"] = g.TokenPosition, ["decision"] = g.Decision.ToString().ToLowerInvariant(),
                ["p_retrieve"] = g.RetrieveProbability, ["p_generate"] = g.GenerateProbability, ["max_retrieval_score"] = g.MaxRetrievalScore,
                ["source"] = g.Source.ToString().ToLowerInvariant(),
            });
        var promptJson = new JsonArray();
        foreach (var p in prompt.Parts)
            promptJson.Add(p is GillTextInput t ? new JsonObject { ["type"] = "text", ["text"] = t.Text } : new JsonObject { ["type"] = "image", ["path"] = ((GillImageInput)p).Path });
        var doc = new JsonObject
        {
            ["prompt"] = promptJson,
            ["text"] = result.Text,
            ["parts"] = parts,
            ["image_groups"] = groups,
            ["token_ids"] = new JsonArray(result.TokenIds.Select(t => (JsonNode)t).ToArray()),
            ["prompt_length"] = result.PromptLength,
            ["timings_ms"] = new JsonObject
            {
                ["visual_encoding"] = result.Timings.VisualEncoding.TotalMilliseconds,
                ["language_model"] = result.Timings.LanguageModel.TotalMilliseconds,
                ["retrieval"] = result.Timings.Retrieval.TotalMilliseconds,
                ["generation"] = result.Timings.Generation.TotalMilliseconds,
                ["total"] = result.Timings.Total.TotalMilliseconds,
            },
        };
        string path = Path.Combine(folder, "result.json");
        Serialization.AtomicFile.WriteAllText(path, doc.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        return path;
    }
}
