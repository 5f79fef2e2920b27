using Gill.ML.Modules;
using Gill.ML.Serialization;
using TorchSharp;
using static TorchSharp.torch;

namespace Gill.ML.Tests.Backbones;

/// <summary>`gill backbone run` semantics: every fixture folder run on its inputs reproduces PyTorch's outputs by name.</summary>
[TestClass]
public sealed class BackboneRunnerTests
{
    private static string Temp() => Path.Combine(Path.GetTempPath(), "gill-run-" + Guid.NewGuid().ToString("N"));

    private static Dictionary<string, Tensor> RunFixture(string fixture, params string[] inputNames)
    {
        var dir = Temp();
        Directory.CreateDirectory(dir);
        try
        {
            var io = Fixtures.Io(fixture);
            var inputs = Path.Combine(dir, "in.safetensors");
            SafeTensors.Save(inputs, inputNames.Select(n => new KeyValuePair<string, Tensor>(n, io[n])));
            var outputs = Path.Combine(dir, "out.safetensors");
            var written = BackboneRunner.Run(Fixtures.Dir(fixture), inputs, outputs);
            Assert.IsTrue(written.Count > 0);
            return SafeTensors.LoadAll(outputs);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [TestMethod]
    public void OptTiny()
    {
        var io = Fixtures.Io("opt-tiny");
        var o = RunFixture("opt-tiny", "input_ids", "attention_mask");
        // Row 0 is unpadded: compare everything; row 1 is left-padded: compare where the mask is 1.
        var mask = io["attention_mask"][1].to(ScalarType.Bool);
        foreach (var name in new[] { "last_hidden_state", "logits", "hidden_states.0", "hidden_states.1", "hidden_states.2" })
        {
            Fixtures.AssertClose(io[name][0], o[name][0], $"{name} row 0");
            Fixtures.AssertClose(io[name][1][mask], o[name][1][mask], $"{name} row 1 (unpadded positions)");
        }
    }

    [TestMethod]
    public void Gpt2Tiny()
    {
        var io = Fixtures.Io("gpt2-tiny");
        var o = RunFixture("gpt2-tiny", "input_ids");
        foreach (var name in new[] { "last_hidden_state", "logits", "hidden_states.0", "hidden_states.1", "hidden_states.2" })
            Fixtures.AssertClose(io[name], o[name], name);
    }

    [TestMethod]
    public void ClipVisionTiny()
    {
        var io = Fixtures.Io("clip-vision-tiny");
        var o = RunFixture("clip-vision-tiny", "pixel_values");
        foreach (var name in new[] { "last_hidden_state", "pooler_output", "image_embeds" })
            Fixtures.AssertClose(io[name], o[name], name);
        // hidden_states.(N-1) is the penultimate layer's output.
        int last = o.Keys.Where(k => k.StartsWith("hidden_states.")).Select(k => int.Parse(k["hidden_states.".Length..])).Max();
        Fixtures.AssertClose(io["penultimate_hidden_state"], o[$"hidden_states.{last - 1}"], "penultimate hidden state");
    }

    [TestMethod]
    public void ClipTextTiny()
    {
        var io = Fixtures.Io("clip-text-tiny");
        var o = RunFixture("clip-text-tiny", "input_ids");
        foreach (var name in new[] { "last_hidden_state", "pooler_output", "text_embeds" })
            Fixtures.AssertClose(io[name], o[name], name);
    }

    [TestMethod]
    public void MissingInputAndUnknownModelTypeAreClearErrors()
    {
        var dir = Temp();
        Directory.CreateDirectory(dir);
        try
        {
            var inputs = Path.Combine(dir, "in.safetensors");
            SafeTensors.Save(inputs, new[] { new KeyValuePair<string, Tensor>("input_ids", torch.zeros(1, 3, ScalarType.Int64)) });
            var e = Assert.ThrowsExactly<ArgumentException>(() => BackboneRunner.Run(Fixtures.Dir("clip-vision-tiny"), inputs, Path.Combine(dir, "o.safetensors")));
            StringAssert.Contains(e.Message, "pixel_values");

            var bogus = Path.Combine(dir, "bogus");
            Directory.CreateDirectory(bogus);
            File.WriteAllText(Path.Combine(bogus, "config.json"), "{\"model_type\": \"llama\"}");
            var n = Assert.ThrowsExactly<NotSupportedException>(() => BackboneRunner.Run(bogus, inputs, Path.Combine(dir, "o.safetensors")));
            StringAssert.Contains(n.Message, "llama");
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
